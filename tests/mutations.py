"""Mutation check: each protocol rule, broken on purpose, must fail the fast rings.

This script owns the list of deliberate rule breaks below (`MUTATIONS`). For each one it
copies the working tree (the files `git ls-files --cached --others --exclude-standard`
lists, uncommitted edits included) into a scratch directory, checks the `old` text occurs
exactly once (else the mutation is STALE: the code moved and the anchor must follow it),
applies the replacement and runs the fast rings there:

    python -m pytest -q -x -p no:cacheprovider -m "not processes" tests

with the copy first on PYTHONPATH (the project is installed editable from its checkout; a
sanity import checks the copy's `peer` and `election` are the ones imported). The mutation
is CAUGHT (by the first FAILED/ERROR node id) or MISSED. An unmutated baseline runs first
and must be green.

Run from anywhere (it is not collected by pytest):

    python tests/mutations.py [--only NAME ...] [--jobs N] [--timeout SECONDS]

It prints a table and exits non-zero if any mutation is MISSED, STALE, TIMEOUT or ERROR.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = ["-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider", "-m", "not processes"]
FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+(?:\[[^\]]*\])?)", re.MULTILINE)
BAD_VERDICTS = {"MISSED", "STALE", "TIMEOUT", "ERROR"}


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the project root
    old: str  # must occur exactly once
    new: str
    rule: str  # the rule it breaks, one line
    ring: str  # the ring expected to catch it (informational)


@dataclass(frozen=True)
class Outcome:
    mutation: str
    rule: str
    verdict: str  # CAUGHT, MISSED, STALE, TIMEOUT, ERROR; the baseline: PASS or FAILED
    detail: str  # the catching node id, or why not
    seconds: float


BULLY = "election/bully.py"
REPLICATION = "peer/protocol/replication.py"
SCHEDULES = "peer/protocol/schedules.py"
CORE = "peer/protocol/core.py"
RECONFIGURATION = "peer/protocol/reconfiguration.py"
WRITES = "peer/protocol/writes.py"

MUTATIONS = [
    Mutation(
        "figure8",
        REPLICATION,
        "if candidate <= self.commit_index or self.log.term_at(candidate) != self.term:",
        "if candidate <= self.commit_index:",
        "an earlier term's entry is committed by counting replicas",
        "ring 1 test_replicator / ring 2 replication sim",
    ),
    Mutation(
        "stale_append",
        BULLY,
        # leader_contact: the term rule for Append/FetchLog lives in `_settle_term`;
        # settling on max(term, self.term) accepts a lower term without adopting it
        "if leader == self.id or not self._settle_term(term):",
        "if leader == self.id or not self._settle_term(max(term, self.term)):",
        "a stale lower-term Append is accepted",
        "ring 1 test_bully / ring 2 replication sim",
    ),
    Mutation(
        "unpersisted_ack",
        BULLY,
        "self.voted_for = msg.sender\n            self._dirty = True\n",
        "self.voted_for = msg.sender\n",
        "a Coordinator ack's vote is sent without being persisted first",
        "ring 1 test_bully / ring 2 election sim (restarts)",
    ),
    Mutation(
        "double_ack",
        BULLY,
        "granted = not self._amnesiac and self.voted_for in (None, msg.sender)",
        "granted = not self._amnesiac",
        "a peer acks two claimants in one term",
        "ring 1 test_bully / ring 2 election sim",
    ),
    Mutation(
        "wrong_attempt_result",
        "peer/protocol/tasks.py",
        "task.state is not TaskState.RUNNING or item.attempt != task.attempt:",
        "task.state is not TaskState.RUNNING:",
        "a result is recorded for the wrong attempt",
        "ring 1 test_task_table / ring 2 execution sim",
    ),
    Mutation(
        "no_log_sync",
        REPLICATION,
        "        if best_peer != self.id:\n            self.sync_from = best_peer\n",
        "        if False:  # mutation: never fetch the best log\n"
        "            self.sync_from = best_peer\n",
        "a new leader serves without fetching the best log",
        "ring 1 test_replicator / ring 2 replication sim",
    ),
    Mutation(
        "no_truncate",
        "peer/protocol/log.py",
        "                self.truncate_after(entry.index - 1)\n",
        "                pass  # mutation: keep the conflicting suffix\n",
        "a follower keeps a conflicting suffix",
        "ring 1 test_replicator / ring 2 replication sim",
    ),
    Mutation(
        "stuck_wiped_follower",
        REPLICATION,
        "                follower.match_index = msg.match_index\n",
        "                pass  # mutation: never lower the match index\n",
        "a leader never lowers a follower's match index on refusal",
        "ring 1 test_replicator (wiped follower)",
    ),
    Mutation(
        "amnesiac_votes",
        BULLY,
        # the flag is read as `self._amnesiac` everywhere: dropping it at construction
        # disables the whole rule (the `amnesiac` property only reports it)
        "self._amnesiac = amnesiac  #",
        "self._amnesiac = False  #",
        "a peer started without stored state votes at once",
        "ring 1 test_bully / ring 2 election sim (wipes)",
    ),
    Mutation(
        "step_down_leader_without_majority",
        BULLY,
        "if len((recent | {self.id}) & self.voters) < self.majority:",
        "if False:  # mutation: never step down",
        "a leader that lost its majority never steps down",
        "ring 1 test_bully / ring 2 election sim (partitions)",
    ),
    Mutation(
        "window_ignored",
        REPLICATION,
        "room = len(follower.inflight) < (1 if follower.probing else self.window)",
        "room = True  # mutation: ignore the window",
        "more Appends in flight to a follower than its window (or than one while probing)",
        "ring 1 test_replicator",
    ),
    Mutation(
        "serve_from_a_wiped_source",
        REPLICATION,
        "        if msg.last_index < self.sync_at_least:\n",
        "        if False:  # mutation: trust a source that lost what it acked with\n",
        "a new leader serves from a log source that lost the entries it acked with",
        "ring 1 test_replicator / ring 2 sims with wipes",
    ),
    Mutation(
        "tick_without_due_in_key",
        SCHEDULES,
        '    return f"schedule:{name}:{instant(due)}"',
        '    return f"schedule:{name}"  # mutation: one key for every tick',
        "ticks are not keyed by their due time (all but the first deduplicated away)",
        "ring 1 test_schedules / ring 2 schedules sim",
    ),
    Mutation(
        "ticks_from_the_wall_clock",
        SCHEDULES,
        "ticks, total = due_ticks(schedule.spec, schedule.origin, after, wall, keep)",
        "ticks, total = due_ticks(schedule.spec, schedule.origin, max(after, wall - 1), wall, keep)",  # noqa: E501
        "a leader computes due ticks from its own clock, not from the last tick in the log",
        "ring 1 test_schedules / ring 2 schedules sim",
    ),
    Mutation(
        "rate_not_from_the_log",
        "peer/protocol/tasks.py",
        "            self.rates.started(task.queue, at)\n",
        "",
        "a queue's rate budget is not kept from the applied assignments",
        "ring 1 test_queues",
    ),
    Mutation(
        "forgotten_key_reused",
        "peer/protocol/tasks.py",
        "        return self.forgotten_keys.get(key)\n",
        "        return None\n",
        "a key of a task retention forgot no longer deduplicates (a late retry runs again)",
        "ring 1 test_retention",
    ),
    Mutation(
        "forgotten_task_left_in_the_heap",
        "peer/protocol/scheduler.py",
        "            task = table.tasks.get(task_id)  # (None: forgotten by retention)\n",
        "            task = table.tasks[task_id]\n",
        "the leader's scheduler looks up a task retention forgot (a crash)",
        "ring 1 test_scheduler",
    ),
    Mutation(
        "own_copy_before_write",
        REPLICATION,
        "            matches.append(self.durable_index)",
        "            matches.append(self.log.last_index)",
        "a leader counts its own copy of an entry before its write of it landed",
        "ring 1 test_replicator / ring 2 sims (commit on a majority of disks)",
    ),
    Mutation(
        "early_ack",
        CORE,
        "early = isinstance(message, Append) and self.replicator.leading",
        "early = isinstance(message, Append | AppendReply)",
        "a follower's acknowledgement leaves before its write of the entries landed",
        "ring 2 sims (an ack with fewer entries on disk)",
    ),
    Mutation(
        "release_before_write",
        WRITES,
        "        if self.staged:\n            needs = self._next",
        "        if False:\n            needs = self._next",
        "a batch's messages and effects go out before the write that covers it",
        "ring 2 sims (vote and ack before disk)",
    ),
    Mutation(
        "snapshot_keeps_conflicting_suffix",
        "peer/protocol/log.py",
        "if index >= self.base_index and self.term_at(index) == term:",
        "if index >= self.base_index and self.term_at(index) is not None:",
        "a snapshot received keeps the entries after it though the log's entry there differs",
        "ring 1 test_snapshot (Raft section 7's rule)",
    ),
    Mutation(
        "snapshot_without_keys",
        "peer/protocol/snapshot.py",
        '"by_key": table.by_key.items(),',
        '"by_key": (),',
        "a snapshot leaves out the idempotency keys (a retried submit would run twice)",
        "ring 1 test_snapshot (round trip)",
    ),
    Mutation(
        "install_keeps_old_table",
        CORE,
        "        self.tasks = table\n        self._own.clear()",
        "        self._own.clear()",
        "a follower installs a snapshot's log position but keeps its own (empty) table",
        "ring 2 test_snapshot_sim (the wiped peer's table)",
    ),
    Mutation(
        "snapshot_parts_out_of_order",
        "peer/protocol/transfer.py",
        "        if chunk.offset != self.offset:\n            return None",
        "        if False:\n            return None",
        "a repeated or stray part of a snapshot is assembled as if it were the next",
        "ring 2 sims with duplicated messages",
    ),
    Mutation(
        "two_membership_changes_at_once",
        RECONFIGURATION,
        "        if self.configs.pending:\n            raise ChangeRefused",
        "        if False:\n            raise ChangeRefused",
        "a leader proposes a membership change while another is uncommitted",
        "ring 2 test_membership_sim (at most one change uncommitted)",
    ),
    Mutation(
        "learners_count_for_commit",
        REPLICATION,
        "        self._voting = [f for p, f in self._followers.items() if p in self.voters]",
        "        self._voting = list(self._followers.values())",
        "a learner's (or a removed peer's) copy counts towards a commit",
        "ring 2 test_membership_sim (commits on a majority of the voters)",
    ),
    Mutation(
        "removed_leader_counts_itself",
        REPLICATION,
        "        if self.id in self.voters:\n            matches.append(self.durable_index)",
        "        if True:\n            matches.append(self.durable_index)",
        "a leader being removed counts its own copy towards a commit",
        "ring 2 test_membership_sim (commits on a majority of the voters)",
    ),
    Mutation(
        "removed_leader_stays",
        RECONFIGURATION,
        "        if self.replicator.leading and not self._votes_in(self.committed_configuration):",
        "        if False:",
        "a leader whose removal is committed goes on leading",
        "ring 2 test_membership_sim (a removed leader resigns)",
    ),
    Mutation(
        "claim_never_recounted",
        RECONFIGURATION,
        "        return self.election.claim_holds(self.configuration.voter_ids)",
        "        return True",
        "a new leader serves though its acks are no majority of its synced log's configuration",
        "ring 2 test_membership_sim (random faults)",
    ),
    Mutation(
        "configuration_on_commit_only",
        "peer/protocol/config_log.py",
        "        return self.pending[-1] if self.pending else self.committed(table)",
        "        return self.committed(table)",
        "a peer uses its committed configuration, not the latest in its log (Raft's rule)",
        "ring 2 test_membership_sim",
    ),
    Mutation(
        "learner_promoted_at_once",
        RECONFIGURATION,
        "            if alive and caught_up:",
        "            if True:",
        "a learner is promoted before it has caught up (it would count while far behind)",
        "ring 2 test_membership_sim (promoted after catching up by snapshot)",
    ),
    Mutation(
        "sync_fetch_not_resent_to_a_removed_source",
        CORE,
        "        if beats and source is not None and source not in beats:",
        "        if False:",
        "a new leader whose synced log removed its sync source never resends a lost fetch",
        "ring 2 test_membership_sim seed 532 (liveness: a ready leader after healing)",
    ),
    Mutation(
        "stale_ack_released",
        WRITES,
        "message.ok and message.term < written_term",
        "message.ok and False",
        "an ack of an older term goes out after a write that may have truncated what it names",
        "ring 1 test_writes; ring 2 test_membership_sim seed 217",
    ),
    Mutation(
        "placement_slot_not_held",
        "peer/protocol/scheduler.py",
        "        busy += self._placed.get(worker, 0)\n",
        "",
        "a slot placed in a submit not yet applied is given out again",
        "ring 1 test_placement / ring 2 execution sim (slots never exceeded)",
    ),
    Mutation(
        "placed_task_not_started",
        "peer/protocol/dispatch.py",
        "            elif entry.started:  # a submit that placed its tasks\n",
        "            elif False:  # mutation: a placed attempt never starts\n",
        "the worker a submit placed a task on never runs it",
        "ring 1 test_placement / ring 2 execution sim",
    ),
    Mutation(
        "ack_configuration_ignored",
        BULLY,
        "        return self._newer is None or self.claim_holds(self._newer[1])",
        "        return True",
        "a claimant counts its acks in a configuration an ack shows it no longer holds",
        "ring 2 test_membership_sim (a peer that missed two changes)",
    ),
]


def snapshot(dest: Path) -> None:
    """Copy the working tree's tracked and untracked-not-ignored files to `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)


def apply(tree: Path, mutation: Mutation) -> bool:
    """Apply `mutation` in `tree`; False (stale) unless `old` occurs exactly once."""
    target = tree / mutation.path
    text = target.read_text() if target.is_file() else ""
    if text.count(mutation.old) != 1:
        return False
    target.write_text(text.replace(mutation.old, mutation.new))
    return True


def copy_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(tree: Path) -> None:
    """Fail loudly unless the copy's packages, not the editable install's, are imported."""
    code = "import election, peer; print(peer.__file__); print(election.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=copy_env(tree), capture_output=True, text=True
    )
    files = out.stdout.split()
    if out.returncode or len(files) != 2 or not all(Path(f).is_relative_to(tree) for f in files):
        raise SystemExit(f"sanity import in {tree} did not use the copy: {out.stdout}{out.stderr}")


def run_rings(tree: Path, timeout: float) -> tuple[str, str]:
    """Run the fast rings in `tree`: (verdict, detail) for a mutated tree."""
    check_imports(tree)
    try:
        out = subprocess.run(
            [sys.executable, *PYTEST, "tests"],
            cwd=tree,
            env=copy_env(tree),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "TIMEOUT", f"no result within {timeout:.0f} s"
    if out.returncode == 0:
        return "MISSED", "all fast rings pass"
    found = FAILED_LINE.search(out.stdout)
    if found:
        return "CAUGHT", found.group(1)
    tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["no output"]
    return "ERROR", f"pytest exit {out.returncode}: {tail[0]}"


def evaluate(base: Path, mutation: Mutation | None, timeout: float, keep: bool) -> Outcome:
    """Run one mutation (None: the baseline) in a fresh copy of the snapshot `base`."""
    start = time.monotonic()
    name = mutation.name if mutation else "baseline"
    tree = Path(tempfile.mkdtemp(prefix=f"mut-{name}-"))
    try:
        shutil.copytree(base, tree, dirs_exist_ok=True, symlinks=True)
        if mutation and not apply(tree, mutation):
            verdict, detail = "STALE", f"`old` not found exactly once in {mutation.path}"
        else:
            verdict, detail = run_rings(tree, timeout)
            if mutation is None:  # the baseline: green, or the test it fails
                verdict = {"MISSED": "PASS", "CAUGHT": "FAILED"}.get(verdict, verdict)
    finally:
        if not keep:
            shutil.rmtree(tree, ignore_errors=True)
    rule = mutation.rule if mutation else "(unmutated tree)"
    outcome = Outcome(name, rule, verdict, detail, time.monotonic() - start)
    print(f"  {name}: {verdict} ({detail}) in {outcome.seconds:.0f} s", file=sys.stderr)
    return outcome


def print_table(outcomes: list[Outcome]) -> None:
    headers = ("mutation", "rule", "verdict", "caught by")
    rows = [(o.mutation, o.rule, o.verdict, o.detail) for o in outcomes]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [m.name for m in MUTATIONS]
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=str(names))
    parser.add_argument("--jobs", type=int, default=1, help="mutations run in parallel")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mut-snapshot-") as snap:
        base = Path(snap)
        snapshot(base)  # one snapshot: every run sees the same tree, whatever is edited
        print(f"snapshot of {ROOT} in {base}; baseline first", file=sys.stderr)
        baseline = evaluate(base, None, args.timeout, args.keep)
        if baseline.verdict != "PASS":
            print(f"baseline is not green: {baseline.verdict} ({baseline.detail})")
            return 2
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(lambda m: evaluate(base, m, args.timeout, args.keep), chosen))
    print_table(outcomes)
    print(f"total {time.monotonic() - started:.0f} s")
    return 1 if any(o.verdict in BAD_VERDICTS for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
