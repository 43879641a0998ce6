"""Where one submit's latency goes: one client, one task at a time, every peer traced.

    python bench/latency_trace.py [--nodes 5] [--count 300] [--json OUT]

Starts a cluster (tests/harness.py) whose peers load a small `sitecustomize` hook (from
a temporary directory put on their PYTHONPATH) that records timestamped events: the
submit handler's start and end, `Node.propose`, each `Storage.save`, each signed frame
sent to a peer and each one taken in, and the bytes of each request received. The
timestamps are `time.monotonic()`, which every process on one machine shares, so the
peers' events line up. After `--count` submits to the leader (bench/submit.py's
latency client), SIGUSR2 makes each peer write its events, and the report gives the
median and p90 of each step of a submit:

- `handler`: the submit handler's start to its end; the client's p50 minus the
  handler's p50 is the time outside it (the client, HTTP parsing, the wake-ups);
  `bytes_to_handler`: the last bytes received before the handler's start to that start
- `to_first_send`: propose to the leader's first Append sent
- `own_write_start`, `own_write`: when the leader's write of the entry starts, and how
  long it takes
- `follower_frame_in`, `follower_write_done`, `follower_reply`: Append sent to the
  frame taken by that follower, frame to the end of its write, write to its reply
- `majority_reply`: propose to the second reply taken on the leader
- `commit_to_response`: that reply to the handler's end

The hook wraps the peers' functions, so it costs a little on every step (read shares
and differences between two trees, not absolute figures).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for `tests.harness`

from tests.harness import Cluster  # noqa: E402

DUMP_WAIT = 10.0  # seconds for the peers to write their events
Event = tuple[float, str, int]  # (monotonic time, what, detail)

HOOK = """
import os, signal, time, json
events = []
now = time.monotonic
from peer.runtime import api, node, peer_routes, server, storage, transport
post_task = api.post_task
async def traced_post_task(request):
    events.append((now(), "h0", 0))
    try:
        return await post_task(request)
    finally:
        events.append((now(), "h1", 0))
api.post_task = traced_post_task
propose = node.Node.propose
async def traced_propose(self, *args, **kwargs):
    events.append((now(), "propose", 0))
    return await propose(self, *args, **kwargs)
node.Node.propose = traced_propose
save = storage.Storage.save
def traced_save(self, *args, **kwargs):
    events.append((now(), "write_start", 0))
    try:
        return save(self, *args, **kwargs)
    finally:
        events.append((now(), "write_end", 0))
storage.Storage.save = traced_save
send = transport.PeerOutbox._send
async def traced_send(self, batch):
    events.append((now(), "send", self.to))
    return await send(self, batch)
transport.PeerOutbox._send = traced_send
from peer.protocol import core
cycle = core.PeerCore.cycle
def traced_cycle(self, *args, **kwargs):
    events.append((now(), "cycle", 0))
    try:
        return cycle(self, *args, **kwargs)
    finally:
        events.append((now(), "cycle_end", 0))
core.PeerCore.cycle = traced_cycle
take = peer_routes._take_frame
def traced_take(node_, frame):
    events.append((now(), "frame_in", len(frame)))
    return take(node_, frame)
peer_routes._take_frame = traced_take
received = server.GuardedConnection.data_received
def traced_received(self, data):
    events.append((now(), "bytes_in", len(data)))
    return received(self, data)
server.GuardedConnection.data_received = traced_received
def dump(*_):
    with open(os.path.join(os.environ["BULLYQ_TRACE_DIR"], f"{os.getpid()}.json"), "w") as f:
        json.dump(events, f)
signal.signal(signal.SIGUSR2, dump)
"""


def first(events: list[Event], what: str, since: float, until: float, detail: int = -1) -> float:
    """The time of the first `what` event in [since, until] (with `detail`, if given);
    NaN if none."""
    for at, name, value in events:
        if at > until:
            break
        if at >= since and name == what and (detail < 0 or value == detail):
            return at
    return float("nan")


def steps(leader: int, traces: dict[int, list[Event]], count: int) -> dict[str, list[float]]:
    """Each step's durations in seconds, one per submit that could be followed."""
    own = traces[leader]
    followers = [n for n in traces if n != leader]
    found: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        if value == value:  # (not NaN)
            found.setdefault(name, []).append(value)

    starts = [i for i, (_, name, _) in enumerate(own) if name == "h0"][:count]
    for i in starts:
        h0 = own[i][0]
        h1 = first(own, "h1", h0, float("inf"))
        propose = first(own, "propose", h0, h1)
        if propose != propose:
            continue
        before = [at for at, name, size in own[max(0, i - 50) : i] if name == "bytes_in"]
        if before:
            note("bytes_to_handler", h0 - before[-1])
        note("handler", h1 - h0)
        write_start = first(own, "write_start", propose, h1)
        note("own_write_start", write_start - propose)
        note("own_write", first(own, "write_end", write_start, h1) - write_start)
        sent = {n: first(own, "send", propose, h1, n) for n in followers}
        note("to_first_send", min(sent.values()) - propose)
        for n in followers:
            frame_in = first(traces[n], "frame_in", sent[n], h1)
            write_start = first(traces[n], "write_start", frame_in, h1)
            write_end = first(traces[n], "write_end", frame_in, h1)
            note("follower_frame_in", frame_in - sent[n])
            note("follower_write_done", write_end - frame_in)
            note("follower_write_wait", write_start - frame_in)
            cycle_at = first(traces[n], "cycle", frame_in, h1)
            note("follower_to_cycle", cycle_at - frame_in)
            note("follower_cycle", first(traces[n], "cycle_end", cycle_at, h1) - cycle_at)
            note("follower_write", write_end - write_start)
            note("follower_reply", first(traces[n], "send", write_end, h1, leader) - write_end)
        replies = [at for at, name, _ in own[i:] if name == "frame_in" and propose <= at <= h1]
        if len(replies) > 1:
            note("majority_reply", replies[1] - propose)
            note("commit_to_response", h1 - replies[1])
    return found


def run(nodes: int, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        hook_dir = Path(tmp) / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        trace_dir = Path(tmp) / "traces"
        trace_dir.mkdir()
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BULLYQ_TRACE_DIR")}
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(hook_dir), saved["PYTHONPATH"]])
        )
        os.environ["BULLYQ_TRACE_DIR"] = str(trace_dir)
        try:
            with Cluster(nodes, Path(tmp) / "cluster", log_level="WARNING") as cluster:
                cluster.start_all()
                leader = cluster.wait_for_leader(timeout=30)
                client = _latency(cluster.url(leader), count)
                pids = {n: cluster.pid(n) for n in cluster.ids}
                for pid in pids.values():
                    if pid:
                        os.kill(pid, signal.SIGUSR2)
                traces = {n: _read_trace(trace_dir / f"{pid}.json") for n, pid in pids.items()}
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    summaries = {name: _summary(values) for name, values in steps(leader, traces, count).items()}
    handler = summaries.get("handler", {"p50": 0.0})["p50"]
    return {
        "nodes": nodes,
        "count": count,
        "client_p50_ms": client["p50_ms"],
        "client_p99_ms": client["p99_ms"],
        "outside_handler_p50_ms": client["p50_ms"] - handler,
        "steps_ms": summaries,
    }


def _latency(url: str, count: int) -> dict[str, Any]:
    """bench/submit.py's one-at-a-time client, in its own process."""
    cmd = [sys.executable, str(ROOT / "bench" / "submit.py"), "--load", "--urls", url]
    cmd += ["--parts", "latency", "--latency", str(count)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])["latency_leader"]
    return result


def _read_trace(path: Path) -> list[Event]:
    deadline = time.monotonic() + DUMP_WAIT
    while True:
        try:
            return [tuple(event) for event in json.loads(path.read_text())]  # type: ignore[misc]
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else 0.0
    return {"p50": statistics.median(ordered) * 1000 if ordered else 0.0, "p90": p90 * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--count", type=int, default=300, help="submits, one at a time")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    result = run(args.nodes, args.count)
    print(f"client p50 {result['client_p50_ms']:.2f} ms, p99 {result['client_p99_ms']:.2f} ms")
    print(f"  outside the handler    p50 {result['outside_handler_p50_ms']:7.3f} ms")
    for name, summary in result["steps_ms"].items():
        print(f"  {name:22s} p50 {summary['p50']:7.3f} ms   p90 {summary['p90']:7.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
