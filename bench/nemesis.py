"""A nemesis soak: a five-peer cluster under keyed writes while a seeded nemesis breaks it,
then a Jepsen-style check of what the clients were told.

    sudo python bench/nemesis.py [--minutes 30] [--seed N] [--clients 4]

Each peer runs in its own network namespace (tests/netns.py) with its data directory on
a tmpfs of its own (so its disk can be filled). For `--minutes`, one fault at a time,
chosen by the seed, each held 1-6 s with a pause between:

- kill: SIGKILL a peer, start it again when the fault ends;
- pause: SIGSTOP a peer, SIGCONT it at the end;
- partition: cut a random minority from the rest, both ways;
- one-way: drop everything one peer sends to the others;
- loss: every peer drops 20% of what it sends;
- disk: fill one peer's disk, free it at the end.

Clients submit keyed echo tasks to random peers (each key once, retried with the same
key on a failure). At the end every fault is healed and the checks are: every
acknowledged key is held by every peer exactly once, under the id its client was given
(0 lost, 0 duplicated); no write was acknowledged by a peer that stood in a partition's
minority for the whole request (0 minority writes); every task ends terminal. Prints
the faults injected and the verdict; exits 1 on any violation. Needs root, `ip netns`
and `nft`; not part of the default test run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.config import NodeAddress  # noqa: E402
from peer.tokens import AuthConfig  # noqa: E402
from tests.chaos import list_all, request_once  # noqa: E402
from tests.harness import Cluster  # noqa: E402
from tests.netns import NetLab  # noqa: E402

SIZE = 5
PORT = 7001
DISK = "512m"  # each peer's tmpfs (the log is not compacted: 30 min of writes take ~100 MB)
FAULTS = ("kill", "pause", "partition", "one-way", "loss", "disk")
SETTLE = 300.0  # seconds for the cluster to converge after the last fault (a restarted
# peer replays its whole log: there is no compaction yet, and after 30 minutes it is long)
MAX_WRITES = 1_000_000  # per client: the time limit comes first


@dataclass
class Ack:
    key: str
    task_id: int
    peer: int
    started: float
    ended: float


@dataclass
class Record:
    """What the clients saw and what the nemesis did (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acks: list[Ack] = field(default_factory=list)
    refused: int = 0
    # (start, end, peers of the minority) of every partition
    minorities: list[tuple[float, float, frozenset[int]]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


def client(cluster: Cluster, name: str, record: Record, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    for n in range(MAX_WRITES):
        if stop.is_set():
            return
        key = f"{name}-{n}"
        body = json.dumps({"kind": "echo", "args": n, "key": key}).encode()
        while not stop.is_set():  # the same key until it is acknowledged
            peer = rng.randint(1, SIZE)
            started = time.monotonic()
            try:
                status, raw = request_once(cluster, peer, "POST", "/tasks", body, timeout=4)
            except OSError:
                status, raw = 0, b""
            if status in (200, 201):
                ack = Ack(key, json.loads(raw)["id"], peer, started, time.monotonic())
                with record.lock:
                    record.acks.append(ack)
                break
            with record.lock:
                record.refused += 1
            time.sleep(0.05)


class Nemesis:
    def __init__(self, cluster: Cluster, lab: NetLab, disks: dict[int, Path], seed: int):
        self.cluster, self.lab, self.disks = cluster, lab, disks
        self.rng = random.Random(seed)

    def strike(self, record: Record, hold: float) -> None:
        fault = self.rng.choice(FAULTS)
        peer = self.rng.randint(1, SIZE)
        began = time.strftime("%H:%M:%S")
        note = getattr(self, "_" + fault.replace("-", "_"))(peer, hold, record)
        with record.lock:
            record.faults.append(f"{began} {note} for {hold:.1f}s")
        print(f"  {record.faults[-1]}", flush=True)

    def _kill(self, peer: int, hold: float, record: Record) -> str:
        self.cluster.kill(peer)
        time.sleep(hold)
        self.cluster.start(peer)
        return f"kill {peer}"

    def _pause(self, peer: int, hold: float, record: Record) -> str:
        pid = self.cluster.pid(peer)
        if pid is None:
            return f"pause {peer} (not running)"
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(hold)
        finally:
            os.kill(pid, signal.SIGCONT)
        return f"pause {peer}"

    def _partition(self, peer: int, hold: float, record: Record) -> str:
        minority = set(self.rng.sample(range(1, SIZE + 1), self.rng.choice([1, 2])))
        rest = set(range(1, SIZE + 1)) - minority
        self.lab.cut(minority, rest)
        began = time.monotonic()  # every rule in place: the sides are apart from here
        time.sleep(hold)
        ended = time.monotonic()  # ... to here: healing starts now
        self.lab.heal()
        with record.lock:
            record.minorities.append((began, ended, frozenset(minority)))
        return f"partition {sorted(minority)} | {sorted(rest)}"

    def _one_way(self, peer: int, hold: float, record: Record) -> str:
        others = set(range(1, SIZE + 1)) - {peer}
        self.lab.cut_one_way(peer, others)
        time.sleep(hold)
        self.lab.heal()
        return f"one-way: {peer}'s packets to the others dropped"

    def _loss(self, peer: int, hold: float, record: Record) -> str:
        self.lab.loss(20)
        time.sleep(hold)
        self.lab.heal()
        return "20% loss everywhere"

    def _disk(self, peer: int, hold: float, record: Record) -> str:
        filler = self.disks[peer] / "filler"
        with open(filler, "wb", buffering=0) as out:
            chunk = b"\0" * (1 << 20)
            while chunk:
                try:
                    out.write(chunk)
                except OSError:
                    chunk = chunk[: len(chunk) // 2]
        time.sleep(hold)
        filler.unlink()
        return f"disk of {peer} full"


def mount_disks(base: Path) -> dict[int, Path]:
    disks = {}
    for peer in range(1, SIZE + 1):
        where = base / f"node-{peer}"
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(where)],
            check=True,
            timeout=10,
        )
        disks[peer] = where
    return disks


def unmount(disks: dict[int, Path]) -> None:
    for where in disks.values():
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def verdict(cluster: Cluster, record: Record) -> dict[str, Any]:
    """The checks, on every peer, after healing."""
    acked: dict[str, int] = {}
    twice: list[str] = []
    for ack in record.acks:
        if acked.setdefault(ack.key, ack.task_id) != ack.task_id:
            twice.append(ack.key)  # one key acknowledged under two ids
    lost, duplicated, unfinished = 0, 0, 0
    for peer in cluster.ids:
        by_key: dict[str, list[int]] = {}
        for task in list_all(cluster, peer):
            if task["key"]:
                by_key.setdefault(task["key"], []).append(task["id"])
            unfinished += task["state"] not in ("succeeded", "failed", "cancelled")
        lost += sum(1 for key, task_id in acked.items() if task_id not in by_key.get(key, []))
        duplicated += sum(1 for ids in by_key.values() if len(ids) > 1)
    minority = [
        f"{ack.key} (id {ack.task_id}) acknowledged by {ack.peer} in "
        f"[{ack.started - began:.3f}, {ack.ended - began:.3f}] s of a cut of {sorted(side)} "
        f"lasting {ended - began:.3f} s"
        for ack in record.acks
        for began, ended, side in record.minorities
        if ack.peer in side and began <= ack.started and ack.ended <= ended
    ]
    for line in minority:
        print(f"minority write: {line}")
    return {
        "acknowledged": len(acked),
        "refused_or_failed_attempts": record.refused,
        "lost": lost,
        "duplicated": duplicated + len(twice),
        "minority_writes": len(minority),
        "unfinished": unfinished,
    }


def converged(cluster: Cluster) -> bool:
    views = cluster.views()
    if not all(views.values()):
        return False
    marks = {(v["leader"], v["commit_index"], v["last_index"]) for v in views.values() if v}
    return len(marks) == 1 and next(iter(marks))[0] is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    why = NetLab.why_not()
    if why is not None:
        print(f"nemesis: cannot run here: {why}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"nemesis: {args.minutes:g} min, seed {seed}, {args.clients} clients", flush=True)
    base = Path(tempfile.mkdtemp(prefix="bench-nemesis-"))
    disks = mount_disks(base / "data")
    record, stop = Record(), threading.Event()
    try:
        with NetLab(SIZE) as lab:
            nodes = tuple(NodeAddress(i, lab.address(i), PORT) for i in range(1, SIZE + 1))
            cluster = Cluster(
                SIZE,
                base / "data",
                {"nodes": nodes, "auth": AuthConfig(insecure=True)},
                log_level="WARNING",
            )
            cluster.prefix = {i: lab.prefix(i) for i in range(1, SIZE + 1)}
            try:
                cluster.start_all()
                cluster.wait_for_leader(expected=SIZE, timeout=30)
                threads = [
                    threading.Thread(target=client, args=(cluster, f"c{i}", record, stop, seed + i))
                    for i in range(args.clients)
                ]
                for thread in threads:
                    thread.start()
                nemesis = Nemesis(cluster, lab, disks, seed)
                deadline = time.monotonic() + args.minutes * 60
                while time.monotonic() < deadline:
                    nemesis.strike(record, nemesis.rng.uniform(1.0, 6.0))
                    time.sleep(nemesis.rng.uniform(0.5, 3.0))
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
                lab.heal()
                for peer in cluster.ids:
                    if not cluster.running(peer):
                        cluster.start(peer)
                settled = True
                try:
                    cluster.wait_for(lambda: converged(cluster), SETTLE, "the cluster to converge")
                    cluster.wait_for(
                        lambda: verdict(cluster, record)["unfinished"] == 0, SETTLE, "every task"
                    )
                except AssertionError as exc:  # still check what the peers hold
                    settled = False
                    print(f"not settled: {str(exc).splitlines()[0]}", flush=True)
                result = verdict(cluster, record)
                result["settled"] = settled
                result["db_mib"] = {
                    p: round((disks[p] / "state.sqlite3").stat().st_size / 2**20, 1)
                    for p in cluster.ids
                    if (disks[p] / "state.sqlite3").exists()
                }
            finally:
                cluster.stop_all()
    finally:
        stop.set()
        unmount(disks)
    result["faults"] = len(record.faults)
    result["seed"] = seed
    print("faults injected:")
    for line in record.faults:
        print(f"  {line}")
    print("verdict: " + json.dumps(result))
    bad = result["lost"] or result["duplicated"] or result["minority_writes"]
    bad = bad or not result["settled"]
    print("FAIL" if bad else "PASS: 0 lost, 0 duplicated, 0 minority writes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
