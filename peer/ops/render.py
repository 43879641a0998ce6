"""Rich renderings of API answers for the `peer` command line: tasks, task pages, the cluster.

Owns how a task, a page of tasks and a `GET /cluster` view look in a terminal. Pure: each
function takes the JSON the API answered and returns a renderable; it prints nothing and
talks to no peer (`peer.ops.cli` does both).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "blocked": "magenta",
    "scheduled": "cyan",
    "queued": "blue",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}
STATUS_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red"}
ROLE_STYLES = {"leader": "bold green", "candidate": "yellow", "follower": ""}
TASK_FIELDS = (
    "id",
    "kind",
    "state",
    "queue",
    "priority",
    "attempt",
    "max_attempts",
    "worker",
    "depends_on",
    "key",
    "args",
    "result",
    "error",
    "submitted_at",
    "started_at",
    "finished_at",
)
TIME_FIELDS = frozenset({"submitted_at", "started_at", "finished_at", "not_before"})


def clock(value: Any) -> str:
    """An epoch time as local `YYYY-MM-DD HH:MM:SS`, or `-` when unset."""
    if not isinstance(value, int | float):
        return "-"
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def plain(value: Any) -> str:
    if value is None or value == []:
        return "-"
    return str(value)


def state_text(state: Any) -> Text:
    return Text(plain(state), style=STATE_STYLES.get(str(state), ""))


def task(item: Mapping[str, Any]) -> RenderableType:
    """One task: a two-column table of its fields."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name in TASK_FIELDS:
        value = item.get(name)
        if name == "state":
            table.add_row(name, state_text(value))
        else:
            table.add_row(name, clock(value) if name in TIME_FIELDS else plain(value))
    return table


def tasks(page: Mapping[str, Any]) -> RenderableType:
    """A page of `GET /tasks`: one row per task, then where the next page starts."""
    table = Table(title=f"{len(page.get('tasks', []))} task(s)", title_justify="left")
    for column in ("id", "kind", "state", "queue", "priority", "attempt", "worker", "submitted"):
        table.add_column(column, justify="right" if column in ("id", "priority") else "left")
    for item in page.get("tasks", []):
        table.add_row(
            str(item.get("id")),
            plain(item.get("kind")),
            state_text(item.get("state")),
            plain(item.get("queue")),
            plain(item.get("priority")),
            f"{item.get('attempt', 0)}/{item.get('max_attempts', '?')}",
            plain(item.get("worker")),
            clock(item.get("submitted_at")),
        )
    if page.get("next") is None:
        return table
    return Group(table, Text(f"more: --after {page['next']}", style="dim"))


def summary(view: Mapping[str, Any]) -> Text:
    """One line: who answered, who leads, the term and the log position."""
    ready = "ready" if view.get("ready") else "not ready"
    leader = view.get("leader")
    return Text.assemble(
        (f"peer {view.get('id')} ", "bold"),
        (plain(view.get("role")), ROLE_STYLES.get(str(view.get("role")), "")),
        f"  leader {plain(leader)} ({ready})" if leader is not None else "  no leader",
        f"  term {plain(view.get('term'))}",
        f"  commit {plain(view.get('commit_index'))}",
        f"  last index {plain(view.get('last_index'))}",
    )


def members(view: Mapping[str, Any]) -> Table:
    table = Table(title="members", title_justify="left")
    columns = ("id", "url", "status", "role", "term", "last index", "commit", "last seen")
    for column in columns:
        table.add_column(column)
    for member in view.get("members", []):
        status, role = str(member.get("status")), str(member.get("role"))
        seen = member.get("last_seen_ms")
        shown = status + (" (drained)" if member.get("drained") else "")
        table.add_row(
            str(member.get("id")),
            plain(member.get("url")),
            Text(shown, style=STATUS_STYLES.get(status, "")),
            Text(plain(member.get("role")), style=ROLE_STYLES.get(role, "")),
            plain(member.get("term")),
            plain(member.get("last_index")),
            plain(member.get("commit_index")),
            "-" if seen is None else f"{seen} ms ago",
        )
    return table


def configuration(config: Mapping[str, Any]) -> Table:
    """A membership configuration (`GET /members`): each member, voter or learner."""
    committed = "" if config.get("committed", True) else ", not yet committed"
    title = f"configuration of log index {config.get('index')}{committed}"
    table = Table(title=title, title_justify="left")
    for column in ("id", "url", "votes"):
        table.add_column(column)
    voters = [(m, "yes") for m in config.get("voters", [])]
    learners = [(m, "no (learner)") for m in config.get("learners", [])]
    for member, votes in sorted(voters + learners, key=lambda pair: int(pair[0].get("id", 0))):
        table.add_row(str(member.get("id")), plain(member.get("url")), votes)
    return table


def counts(view: Mapping[str, Any]) -> Table | None:
    """Tasks per state, when the view carries them."""
    per_state = view.get("tasks")
    if not isinstance(per_state, Mapping):
        return None
    table = Table(title="tasks", title_justify="left")
    for state in per_state:
        table.add_column(Text(str(state), style=STATE_STYLES.get(str(state), "")), justify="right")
    table.add_row(*(str(n) for n in per_state.values()))
    return table


def cluster(view: Mapping[str, Any]) -> RenderableType:
    """A `GET /cluster` view: the summary line, the members, the task counts."""
    parts: list[RenderableType] = [summary(view), members(view)]
    per_state = counts(view)
    if per_state is not None:
        parts.append(per_state)
    return Group(*parts)


SCHEDULE_FIELDS = (
    "name",
    "every",
    "cron",
    "timezone",
    "catch_up",
    "overlap",
    "paused",
    "task",
    "next_due",
    "last_due",
    "last_task",
    "fired",
    "skipped",
    "runs",
    "created_at",
)
SCHEDULE_TIMES = frozenset({"next_due", "last_due", "created_at"})


def rhythm(item: Mapping[str, Any]) -> str:
    if item.get("every") is not None:
        return f"every {item['every']:g}s"
    return f"cron {item.get('cron')} ({item.get('timezone', 'UTC')})"


def schedule(item: Mapping[str, Any]) -> RenderableType:
    """One schedule: a two-column table of its fields."""
    if "deleted" in item:
        return Text(f"deleted schedule {item['deleted']}")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name in SCHEDULE_FIELDS:
        value = item.get(name)
        table.add_row(name, clock(value) if name in SCHEDULE_TIMES else plain(value))
    return table


def schedules(items: list[Mapping[str, Any]]) -> RenderableType:
    """`GET /schedules`: one row per schedule."""
    table = Table(title=f"{len(items)} schedule(s)", title_justify="left")
    for column in ("name", "when", "task", "next due", "last fired", "fired", "skipped", "runs"):
        table.add_column(column)
    for item in items:
        runs = item.get("runs") or {}
        table.add_row(
            plain(item.get("name")) + (" (paused)" if item.get("paused") else ""),
            rhythm(item),
            plain((item.get("task") or {}).get("kind")),
            clock(item.get("next_due")),
            clock(item.get("last_due")),
            plain(item.get("fired")),
            plain(sum((item.get("skipped") or {}).values())),
            " ".join(f"{state} {n}" for state, n in runs.items() if n) or "-",
        )
    return table


def requeued(answer: Mapping[str, Any]) -> RenderableType:
    ids = answer.get("ids") or []
    shown = ", ".join(map(str, ids[:20])) + (" …" if len(ids) > 20 else "")
    return Text(f"requeued {answer.get('requeued', 0)} task(s)" + (f": {shown}" if ids else ""))


def drained(answer: Mapping[str, Any]) -> RenderableType:
    verb = "drained (no new tasks)" if answer.get("drained") else "undrained (takes tasks)"
    return Text(f"peer {answer.get('peer')} {verb}")
