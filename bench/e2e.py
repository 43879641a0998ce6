"""End-to-end execution benchmark: submit to succeeded, and recovery from a lost worker.

    python bench/e2e.py [--nodes 5] [--tasks 20000] [--batch 500] [--posters 4]
                        [--slots S] [--loss-runs 5] [--loss-sleep 2] [--json OUT]
                        [--data-dir D]

Starts its own cluster on free loopback ports (tests/harness.py, log level WARNING).

1. throughput: a separate client process (so its CPU is not hidden in the peers' and is
   reported alone) posts `--tasks` echo tasks as `/tasks/batch` requests of `--batch`
   tasks from `--posters` concurrent posters to random peers (keyed, so a retried batch
   never runs twice). Measured from the first submit until the leader's `GET /cluster`
   task counts show them all succeeded (polled every 50 ms): tasks/s, plus the peers'
   total CPU seconds and the client's.
2. worker loss, `--loss-runs` times: submit `sleep --loss-sleep` tasks, slots x nodes of
   them so every slot of every worker is busy, wait until all run, SIGKILL a non-leader
   worker and poll `GET /tasks?state=running` on the leader every 20 ms: "failed" is the
   time until the killed worker's attempts leave `running` (the leader judged them lost),
   "rerunning" until each of them runs again elsewhere (attempt >= 2, another worker).
   With every slot busy a lost task waits for a free slot, so "rerunning" includes the
   rest of the other tasks' sleep. The same is then measured with spare capacity
   (slots x (nodes - 1) tasks: the survivors have a free slot for every lost task). The
   killed peer is restarted between runs.

Prints a table; `--json OUT` also writes every figure. `measure_throughput`,
`measure_loss`, `summary` and `peer_cpu` are also used by `bench/run.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for `tests.harness`

from cli_run import run_in_data_dir  # noqa: E402

START_TIMEOUT = 30.0
PHASE_TIMEOUT = 30.0
COUNT_POLL = 0.05  # seconds between reads of the leader's task counts
LOSS_POLL = 0.02  # seconds between reads of the running tasks
REQUEST_TIMEOUT = 60.0  # one batch post under load
MAX_TRIES = 30  # posts of one batch before the client gives up


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="peers in the cluster (5)")
    parser.add_argument("--tasks", type=int, default=20000, help="echo tasks to run (20000)")
    parser.add_argument("--batch", type=int, default=500, help="tasks per batch request (500)")
    parser.add_argument("--posters", type=int, default=4, help="concurrent batch posters (4)")
    parser.add_argument("--slots", type=int, help="slots per peer (cluster.toml's value)")
    parser.add_argument("--loss-runs", type=int, default=5, help="worker kills to measure (5)")
    parser.add_argument("--loss-sleep", type=float, default=2.0, help="sleep task seconds (2)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    parser.add_argument("--data-dir", help="keep config and peer logs here (default: a tmp dir)")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    return parser


# ------------------------------------------------------------ the client process


async def _post_all(urls: list[str], tasks: int, batch: int, posters: int) -> dict[str, Any]:
    import aiohttp

    batches = iter(range(0, tasks, batch))
    out: dict[str, Any] = {"acked": 0, "posts": 0, "retries": 0, "statuses": {}}
    first: list[float] = []
    last_ack = 0.0

    async def post(session: aiohttp.ClientSession, body: bytes) -> int:
        for attempt in range(MAX_TRIES):
            out["posts"] += 1
            if not first:
                first.append(time.time())
            try:
                async with session.post(
                    random.choice(urls) + "/tasks/batch",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    reply = await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError):
                status, reply = "error", b""
            out["statuses"][status] = out["statuses"].get(status, 0) + 1
            if status in ("200", "201"):
                return len(json.loads(reply)["tasks"])
            out["retries"] += 1
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
        raise RuntimeError(f"a batch was refused {MAX_TRIES} times: {out['statuses']}")

    async def poster(session: aiohttp.ClientSession) -> None:
        nonlocal last_ack
        for start in batches:  # shared iterator: each batch goes to one poster
            specs = [
                {"kind": "echo", "args": i, "key": f"e2e-{i}"}
                for i in range(start, min(tasks, start + batch))
            ]
            out["acked"] += await post(session, json.dumps({"tasks": specs}).encode())
            last_ack = time.time()

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(poster(session) for _ in range(posters)))
    out["first_submit_wall"] = first[0] if first else None
    out["last_ack_wall"] = last_ack
    return out


def run_load(args: argparse.Namespace) -> None:
    """The client process: posts every batch, prints one JSON line of results."""
    out = asyncio.run(_post_all(args.urls.split(","), args.tasks, args.batch, args.posters))
    out["client_cpu_seconds"] = time.process_time()
    print(json.dumps(out))


# ------------------------------------------------------------------- helpers


def peer_cpu(cluster: Any) -> dict[int, float]:
    """CPU seconds (user + system) each running peer process has used so far."""
    out = {}
    for n in cluster.running_ids():
        pid = cluster.pid(n)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[n] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def get_json(cluster: Any, n: int, path: str, timeout: float = 2.0) -> Any:
    answer = cluster.request(n, "GET", path, timeout=timeout)
    if answer is None or answer[0] != 200:
        return None
    return json.loads(answer[1])


def post_json(cluster: Any, n: int, path: str, body: Any, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    answer = cluster.request(n, "POST", path, data, headers, timeout=timeout)
    if answer is None or answer[0] not in (200, 201):
        raise AssertionError(f"POST {path} at peer {n}: {answer and answer[0]} {answer}")
    return json.loads(answer[1])


def current_leader(cluster: Any, hint: int) -> int:
    """The ready leader (`hint` if it still leads): a leader change is followed."""
    view = cluster.view(hint)
    if view is not None and view["role"] == "leader" and view.get("ready"):
        return hint
    return cluster.wait_for_leader(timeout=PHASE_TIMEOUT)


def wait_settled(cluster: Any, leader: int) -> None:
    """Every running peer alive in the leader's view and holding all of its tasks."""

    def settled() -> bool:
        view = cluster.view(leader)
        if view is None:
            return False
        status = {m["id"]: m["status"] for m in view["members"]}
        if any(status.get(n) != "alive" for n in cluster.running_ids()):
            return False
        total = sum(view["tasks"].values())
        views = cluster.views(cluster.running_ids())
        return all(v is not None and sum(v["tasks"].values()) == total for v in views.values())

    cluster.wait_for(settled, START_TIMEOUT, "every peer alive and caught up", interval=0.05)


def idle(cluster: Any, leader: int) -> bool:
    view = cluster.view(leader)
    if view is None:
        return False
    counts = view["tasks"]
    busy = sum(counts[s] for s in ("queued", "scheduled", "running", "blocked"))
    return busy == 0 and all((v or {}).get("running") == 0 for v in cluster.views().values())


# ---------------------------------------------------------------- throughput


def measure_throughput(cluster: Any, tasks: int, batch: int, posters: int) -> dict[str, Any]:
    """`tasks` echo tasks from a client process, first submit to last succeeded."""
    leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
    wait_settled(cluster, leader)
    base = get_json(cluster, leader, "/cluster")["tasks"]["succeeded"]
    target = base + tasks
    urls = [cluster.url(n) for n in cluster.ids]
    cpu0 = peer_cpu(cluster)
    cmd = [sys.executable, __file__, "--load", "--urls", ",".join(urls)]
    cmd += ["--tasks", str(tasks), "--batch", str(batch), "--posters", str(posters)]
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    bound = max(120.0, tasks / 50)
    deadline = time.monotonic() + bound
    leaders = {leader}
    peak_queue = 0
    done_wall = None
    timeline: list[tuple[float, int, int]] = []  # (wall time, succeeded, queued + scheduled)
    while time.monotonic() < deadline:
        view = get_json(cluster, leader, "/cluster")
        if view is not None:
            counts = view["tasks"]
            queue = counts["queued"] + counts["scheduled"]
            peak_queue = max(peak_queue, queue)
            timeline.append((time.time(), counts["succeeded"] - base, queue))
            if counts["succeeded"] >= target:
                done_wall = time.time()
                break
            if view["role"] != "leader" and view["leader"] is not None:
                leader = view["leader"]
                leaders.add(leader)
        if client.poll() not in (None, 0):
            raise AssertionError(f"the client process failed (exit {client.returncode})")
        time.sleep(COUNT_POLL)
    if done_wall is None:
        client.kill()
        raise AssertionError(f"not all {tasks} tasks succeeded within {bound:.0f}s")
    cpu1 = peer_cpu(cluster)
    stdout, _ = client.communicate(timeout=PHASE_TIMEOUT)
    load = json.loads(stdout.strip().splitlines()[-1])

    def everywhere() -> bool:
        views = cluster.views(cluster.running_ids())
        return all(v is not None and v["tasks"]["succeeded"] >= target for v in views.values())

    cluster.wait_for(everywhere, PHASE_TIMEOUT, "every peer to apply every result", 0.05)
    all_peers_wall = time.time()
    first = load["first_submit_wall"]
    seconds = done_wall - first
    return {
        "tasks": tasks,
        "batch": batch,
        "posters": posters,
        "seconds": seconds,
        "per_second": tasks / seconds,
        "submit_seconds": load["last_ack_wall"] - first,
        "submit_per_second": tasks / (load["last_ack_wall"] - first),
        "all_peers_seconds": all_peers_wall - first,
        "peak_queue": peak_queue,
        "leaders": sorted(leaders),
        "posts": load["posts"],
        "retries": load["retries"],
        "statuses": load["statuses"],
        "peer_cpu_seconds": sum(cpu1.get(n, 0.0) - cpu0.get(n, 0.0) for n in cpu1),
        "peer_cpu_by_peer": {n: cpu1[n] - cpu0.get(n, 0.0) for n in sorted(cpu1)},
        "client_cpu_seconds": load["client_cpu_seconds"],
        "timeline": [(round(w - first, 3), done, queue) for w, done, queue in timeline],
    }


# --------------------------------------------------------------- worker loss


def running_tasks(cluster: Any, leader: int, after: int) -> dict[int, dict[str, Any]] | None:
    page = get_json(cluster, leader, f"/tasks?state=running&after={after}&limit=1000", 1.0)
    return None if page is None else {t["id"]: t for t in page["tasks"]}


def measure_loss(
    cluster: Any, run_no: int, count: int, sleep: float, variant: str
) -> dict[str, Any]:
    leader = cluster.wait_for_leader(timeout=PHASE_TIMEOUT)
    wait_settled(cluster, leader)
    cluster.wait_for(lambda: idle(cluster, leader), PHASE_TIMEOUT, "an idle cluster", 0.05)
    specs = [{"kind": "sleep", "args": {"seconds": sleep}} for _ in range(count)]
    ids = [t["id"] for t in post_json(cluster, leader, "/tasks/batch", {"tasks": specs})["tasks"]]
    after = min(ids) - 1

    def all_running() -> dict[int, dict[str, Any]] | None:
        running = running_tasks(cluster, leader, after)
        return running if running is not None and set(ids) <= set(running) else None

    running = cluster.wait_for(all_running, sleep, f"all {count} sleep tasks running", LOSS_POLL)
    candidates = sorted({t["worker"] for t in running.values()} - {leader})
    victim = candidates[run_no % len(candidates)]
    lost = {i: t["attempt"] for i, t in running.items() if t["worker"] == victim}

    killed_at = time.perf_counter()
    cluster.kill(victim)
    failed_at = rerun_at = None
    polls = 0
    where: dict[int, int] = {}
    deadline = killed_at + PHASE_TIMEOUT
    while rerun_at is None and time.perf_counter() < deadline:
        polls += 1
        running = running_tasks(cluster, leader, after)
        now = time.perf_counter()
        if running is not None:
            if failed_at is None and not any(
                running.get(i, {}).get("worker") == victim for i in lost
            ):
                failed_at = now
            moved = {
                i: running[i]["worker"]
                for i in lost
                if i in running
                and running[i]["attempt"] > lost[i]
                and running[i]["worker"] != victim
            }
            if len(moved) == len(lost):
                rerun_at, where = now, moved
        time.sleep(LOSS_POLL)
    if rerun_at is None:
        raise AssertionError(f"run {run_no}: tasks {sorted(lost)} not rerun in {PHASE_TIMEOUT}s")
    failed_at = failed_at or rerun_at

    cluster.start(victim)
    leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
    wait_settled(cluster, leader)
    return {
        "variant": variant,
        "run": run_no,
        "leader": leader,
        "killed": victim,
        "tasks": count,
        "lost_tasks": len(lost),
        "rerun_on": sorted(where.values()),
        "failed_s": failed_at - killed_at,
        "rerunning_s": rerun_at - killed_at,
        "polls": polls,
    }


# ------------------------------------------------------------------- report


def summary(samples: list[dict[str, Any]], name: str) -> dict[str, float]:
    values = [s[name] for s in samples]
    return {"median_s": statistics.median(values), "max_s": max(values), "min_s": min(values)}


def print_report(result: dict[str, Any]) -> None:
    t = result["throughput"]
    cpu = ", ".join(f"{n}: {s:.1f}" for n, s in t["peer_cpu_by_peer"].items())
    print(
        f"\nthroughput: {t['tasks']} echo tasks, batches of {t['batch']}, {t['posters']} posters"
        f" -> {result['nodes']} peers (leaders seen {t['leaders']})\n"
        f"  all acknowledged        {t['submit_seconds']:7.2f} s  "
        f"{t['submit_per_second']:8.0f} tasks/s\n"
        f"  all succeeded (leader)  {t['seconds']:7.2f} s  {t['per_second']:8.0f} tasks/s\n"
        f"  all succeeded (every peer) {t['all_peers_seconds']:4.2f} s\n"
        f"  peak queue {t['peak_queue']}, posts {t['posts']} (retries {t['retries']}),"
        f" statuses {t['statuses']}\n"
        f"  CPU seconds: peers {t['peer_cpu_seconds']:.1f} ({cpu}),"
        f" client {t['client_cpu_seconds']:.1f}"
    )
    print(f"\nworker loss (SIGKILL of a non-leader worker; sleep {result['loss_sleep']:g} s tasks)")
    print(f"{'variant':>8} {'run':>3} {'killed':>6} {'lost':>4} {'failed ms':>10} {'rerun ms':>9}")
    for s in result["loss"]:
        print(
            f"{s['variant']:>8} {s['run']:>3} {s['killed']:>6} {s['lost_tasks']:>4}"
            f" {s['failed_s'] * 1000:>10.0f} {s['rerunning_s'] * 1000:>9.0f}"
        )
    for variant, figures in result["loss_summary"].items():
        f, r = figures["failed"], figures["rerunning"]
        print(
            f"  {variant}: failed median {f['median_s'] * 1000:.0f} ms, max"
            f" {f['max_s'] * 1000:.0f} ms; rerunning median {r['median_s'] * 1000:.0f} ms,"
            f" max {r['max_s'] * 1000:.0f} ms"
        )


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from tests.harness import Cluster

    overrides = {} if args.slots is None else {"slots": args.slots}
    with Cluster(args.nodes, data_dir, overrides, log_level="WARNING") as cluster:
        config = cluster.config
        print(
            f"{args.nodes} peers, {config.slots} slots each, heartbeat "
            f"{config.heartbeat_interval}s, failure {config.failure_timeout}s, retry_base "
            f"{config.retry_base}s; logs in {data_dir}"
        )
        cluster.start_all()
        cluster.wait_for_leader(max(cluster.ids), timeout=START_TIMEOUT)  # the settled one
        throughput = measure_throughput(cluster, args.tasks, args.batch, args.posters)
        print(f"throughput: {throughput['per_second']:.0f} tasks/s end to end", flush=True)
        loss = []
        full = config.slots * args.nodes
        spare = config.slots * (args.nodes - 1)
        for variant, count in (("full", full), ("spare", spare)):
            for run_no in range(args.loss_runs):
                sample = measure_loss(cluster, run_no, count, args.loss_sleep, variant)
                print(
                    f"worker loss {variant} {run_no}: killed {sample['killed']}, "
                    f"rerunning after {sample['rerunning_s'] * 1000:.0f} ms",
                    flush=True,
                )
                loss.append(sample)
    by_variant = {
        v: {
            "failed": summary([s for s in loss if s["variant"] == v], "failed_s"),
            "rerunning": summary([s for s in loss if s["variant"] == v], "rerunning_s"),
        }
        for v in ("full", "spare")
        if any(s["variant"] == v for s in loss)
    }
    return {
        "nodes": args.nodes,
        "slots": config.slots,
        "timings": {
            "heartbeat_interval": config.heartbeat_interval,
            "failure_timeout": config.failure_timeout,
            "retry_base": config.retry_base,
        },
        "throughput": throughput,
        "loss_sleep": args.loss_sleep,
        "loss": loss,
        "loss_summary": by_variant,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.load:
        run_load(args)
        return 0
    return run_in_data_dir(args, run, "bench-e2e-", print_report)


if __name__ == "__main__":
    raise SystemExit(main())
