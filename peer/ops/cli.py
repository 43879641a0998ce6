"""The `peer` command line: `serve` runs one peer; `submit`, `task`, `tasks` and `status`
talk to a running cluster through `peer.client`.

Client commands take `--peer URL` (repeatable; default `$PEER_URL`, a comma-separated
list, else http://127.0.0.1:7001), `--token` (default `$BULLYQ_TOKEN`) and `--json`
(plain JSON on stdout, for scripts; rich tables otherwise, drawn by `peer.ops.render`).
Exit codes: 0 ok, 1 the cluster refused the request (the reason on stderr), 2 usage
error, 3 no peer could serve the request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console

from peer.client import Client, ClientError, Unavailable
from peer.client.asynchronous import TOKEN_ENV
from peer.config import ClusterConfig, ConfigError, exposure_problem, load_config
from peer.ops import render
from peer.runtime.logs import FORMATS

DEFAULT_PEER = "http://127.0.0.1:7001"
DEFAULT_SUBMIT_WAIT = 60.0  # seconds `submit --wait` waits when given no number
RETRY_TIME = 5.0  # seconds a command keeps retrying an unavailable cluster
MEMBER_WAIT = 60.0  # seconds `members add` waits for the new peer to vote

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _json_value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--peer",
        action="append",
        metavar="URL",
        help=f"a peer to talk to, repeatable (default: $PEER_URL or {DEFAULT_PEER})",
    )
    common.add_argument(
        "--token", help="the API token (default: $BULLYQ_TOKEN; run_cluster.py prints one)"
    )
    common.add_argument("--ca", help="the CA file of a TLS cluster (default: $BULLYQ_CA)")
    common.add_argument("--json", action="store_true", help="print plain JSON")
    common.add_argument(
        "-o", "--output", choices=("table", "json"), help="json: the same as --json"
    )
    return common


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run one peer")
    serve.add_argument("--config", default="cluster.toml", help="cluster file (cluster.toml)")
    serve.add_argument("--id", type=int, required=True, help="this peer's id in the file")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--join",
        action="store_true",
        help="new to a running cluster: wait, as a learner, for `peer members add`",
    )
    serve.add_argument(
        "--log-format",
        choices=FORMATS,
        help="console, json lines, or auto: console on a terminal (default: log_format)",
    )


def _add_submit(sub: Any, common: argparse.ArgumentParser) -> None:
    submit = sub.add_parser("submit", parents=[common], help="submit a task")
    submit.add_argument("kind", help="the task kind (echo, sleep, fail, ...)")
    submit.add_argument("--args", type=_json_value, metavar="JSON", help="the task's arguments")
    submit.add_argument("--queue")
    submit.add_argument("--priority", type=int)
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--timeout", type=_seconds, metavar="S", help="seconds per attempt")
    submit.add_argument("--delay", type=_seconds, metavar="S", help="seconds before it may run")
    submit.add_argument("--depends-on", type=int, nargs="+", metavar="ID", default=None)
    submit.add_argument("--key", help="idempotency key (default: a fresh one)")
    submit.add_argument(
        "--wait",
        type=_seconds,
        nargs="?",
        const=DEFAULT_SUBMIT_WAIT,
        metavar="SECONDS",
        help=f"wait for a terminal state (default {DEFAULT_SUBMIT_WAIT:g} s)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peer", description="A peer of the task cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _client_options()
    _add_serve(sub)
    _add_submit(sub, common)
    task = sub.add_parser("task", parents=[common], help="show one task")
    task.add_argument("id", type=int)
    task.add_argument("--wait", type=_seconds, metavar="S", help="long-poll for a terminal state")
    tasks = sub.add_parser("tasks", parents=[common], help="list tasks")
    tasks.add_argument("--state")
    tasks.add_argument("--queue")
    tasks.add_argument("--limit", type=int)
    tasks.add_argument("--after", type=int, metavar="CURSOR", help="the page after this cursor")
    sub.add_parser("status", parents=[common], help="show the cluster as a peer sees it")
    _add_schedule(sub, common)
    _add_operations(sub, common)
    watch = sub.add_parser("watch", help="the live dashboard of a running cluster")
    watch.add_argument("--config", default="cluster.toml", help="its cluster file")
    watch.add_argument("--headless", action="store_true", help="print events, no dashboard")
    watch.add_argument("--token", help="an API token with role read (default: $BULLYQ_TOKEN)")
    certs = sub.add_parser("certs", help="make a local CA and a certificate per peer ([tls])")
    certs.add_argument("--config", default="cluster.toml", help="the cluster file")
    certs.add_argument("--out", default="certs", help="where to write them (certs/)")
    return parser


def _config(path: str) -> ClusterConfig | None:
    """The cluster file at `path`, or None after saying on stderr why it cannot be read."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _watch(args: argparse.Namespace) -> int:
    """The run_cluster.py dashboard against peers started elsewhere (it starts none)."""
    import asyncio

    from peer.ops.dashboard import ClusterWatch
    from peer.ops.remote import RemotePeers

    config = _config(args.config)
    if config is None:
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the watch, nothing else
        token = args.token or os.environ.get(TOKEN_ENV)
        asyncio.run(ClusterWatch(RemotePeers(config), args.headless, token=token).run())
    return EXIT_OK


def _certs(args: argparse.Namespace) -> int:
    """A local CA and every peer's certificate, and the [tls] table that uses them."""
    from pathlib import Path

    from peer.ops.certs import make_certs

    config = _config(args.config)
    if config is None:
        return EXIT_USAGE
    lines = make_certs(config, Path(args.out))
    print(f"wrote a CA and {len(config.nodes)} peer certificates to {args.out}/; add to")
    print(f"{args.config} (and give clients --ca or $BULLYQ_CA). Copy ca.pem and a peer's")
    print("own node-N files to its host; keep ca.key off the peers:\n")
    print("\n".join(lines))
    return EXIT_OK


def _add_operations(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, text in (("cancel", "cancel a task"), ("retry", "retry a failed or cancelled task")):
        sub.add_parser(name, parents=[common], help=text).add_argument("id", type=int)
    requeue = sub.add_parser("requeue", parents=[common], help="retry every task a filter matches")
    requeue.add_argument("--state", choices=("failed", "cancelled"), default="failed")
    requeue.add_argument("--queue")
    requeue.add_argument("--kind")
    requeue.add_argument("--limit", type=int, help="at most this many (1000; up to 10000)")
    members = sub.add_parser(
        "members", parents=[common], help="the peers as the one asked sees them; add, remove"
    )
    actions = members.add_subparsers(dest="action")
    add = actions.add_parser(
        "add", parents=[common], help="add a peer started with `peer serve --join`"
    )
    add.add_argument("id", type=int, metavar="ID", help="its id (in its cluster.toml)")
    add.add_argument("address", metavar="HOST:PORT", help="where it serves")
    add.add_argument(
        "--wait",
        type=_seconds,
        default=MEMBER_WAIT,
        metavar="S",
        help=f"seconds to wait until it votes (default {MEMBER_WAIT:g}; 0: do not wait)",
    )
    remove = actions.add_parser("remove", parents=[common], help="remove a peer")
    remove.add_argument("id", type=int, metavar="ID")
    for name, text in (("drain", "give a peer no new tasks"), ("undrain", "undo drain")):
        one = sub.add_parser(name, parents=[common], help=text)
        one.add_argument("node", type=int, metavar="PEER", help="the peer's id")


def _add_schedule(sub: Any, common: argparse.ArgumentParser) -> None:
    schedule = sub.add_parser("schedule", help="periodic tasks: add, list, show, rm, pause, resume")
    actions = schedule.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="add (or --replace) a schedule")
    add.add_argument("name")
    rhythm = add.add_mutually_exclusive_group(required=True)
    rhythm.add_argument("--every", type=_seconds, metavar="S", help="seconds between ticks")
    rhythm.add_argument("--cron", metavar="EXPR", help="5 fields, or 6 with seconds first")
    add.add_argument("kind", help="the task kind each tick submits")
    add.add_argument("--args", type=_json_value, metavar="JSON", help="the task's arguments")
    add.add_argument("--queue")
    add.add_argument("--priority", type=int)
    add.add_argument("--catch-up", choices=("all", "latest", "none"))
    add.add_argument("--no-overlap", action="store_true", help="skip a tick while one runs")
    add.add_argument("--timezone", help="an IANA name for --cron (default UTC)")
    add.add_argument("--replace", action="store_true", help="replace a different one")
    actions.add_parser("list", parents=[common], help="list the schedules")
    named = {"show": "show", "rm": "delete", "pause": "pause", "resume": "resume"}
    for action, verb in named.items():
        one = actions.add_parser(action, parents=[common], help=f"{verb} one schedule")
        one.add_argument("name")


def _serve(args: argparse.Namespace) -> int:
    from peer.registry import Registry
    from peer.runtime.logs import configure as configure_logs
    from peer.runtime.server import run
    from peer.runtime.storage import StorageBusy
    from peer.runtime.validation import declared_schedules

    try:
        config = load_config(args.config)
        config.node(args.id)
        problem = exposure_problem(config, args.id)
        if problem is not None:
            raise ConfigError(problem)
        declared_schedules(config, Registry(config.task_modules, config.allow_shell))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fmt = args.log_format or config.log_format
    try:
        run(config, args.id, configure_logs(args.id, args.log_level, fmt), join=args.join)
    except StorageBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------ client commands

Command = Callable[[Client, argparse.Namespace], Any]


def _submit(client: Client, args: argparse.Namespace) -> Any:
    task = client.submit(
        args.kind,
        args.args,
        queue=args.queue,
        priority=args.priority,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        delay=args.delay,
        depends_on=args.depends_on,
        key=args.key,
    )
    if args.wait is None:
        return task
    return client.wait(task["id"], args.wait)


def _task(client: Client, args: argparse.Namespace) -> Any:
    if args.wait:
        return client.wait(args.id, args.wait)
    return client.get(args.id)


def _tasks(client: Client, args: argparse.Namespace) -> Any:
    return client.list(args.state, args.queue, args.limit, args.after)


def _status(client: Client, args: argparse.Namespace) -> Any:
    return client.cluster()


def _members(client: Client, args: argparse.Namespace) -> Any:
    action = getattr(args, "action", None)
    if action == "add":
        return _add_member(client, args.id, args.address, args.wait)
    if action == "remove":
        return client.remove_member(args.id)
    return {"members": client.cluster()["members"]}


def _add_member(client: Client, peer: int, address: str, wait: float) -> Any:
    """Add the peer as a learner, then wait (bounded) until the leader promotes it."""
    if "://" not in address:
        scheme = client.cluster().get("url", "http://").partition("://")[0]
        address = f"{scheme}://{address}"
    config = client.add_member(peer, address)
    deadline = time.monotonic() + wait
    while not any(m["id"] == peer for m in config["voters"]):
        if time.monotonic() >= deadline:
            if wait:
                print(f"peer {peer} is not yet a voter (still catching up)", file=sys.stderr)
            break
        time.sleep(0.2)
        config = client.members()
    return config


def _operation(client: Client, args: argparse.Namespace) -> Any:
    if args.command == "cancel":
        return client.cancel(args.id)
    if args.command == "retry":
        return client.retry(args.id)
    if args.command == "requeue":
        return client.requeue(args.state, args.queue, args.kind, args.limit)
    return client.drain(args.node, drained=args.command == "drain")


def _schedule(client: Client, args: argparse.Namespace) -> Any:
    if args.action == "add":
        task = {
            "kind": args.kind,
            "args": args.args,
            "queue": args.queue,
            "priority": args.priority,
        }
        body = {
            "name": args.name,
            "every": args.every,
            "cron": args.cron,
            "task": {k: v for k, v in task.items() if v is not None},
            "catch_up": args.catch_up,
            "overlap": False if args.no_overlap else None,
            "timezone": args.timezone,
        }
        return client.put_schedule({k: v for k, v in body.items() if v is not None}, args.replace)
    if args.action == "list":
        return client.schedules()
    if args.action == "show":
        return client.schedule(args.name)
    if args.action == "rm":
        return client.delete_schedule(args.name)
    return client.pause_schedule(args.name, paused=args.action == "pause")


def _draw_members(data: Any) -> Any:
    return render.members(data) if "members" in data else render.configuration(data)


def _draw_schedule(data: Any) -> Any:
    return render.schedules(data) if isinstance(data, list) else render.schedule(data)


COMMANDS: dict[str, tuple[Command, Callable[[Any], Any]]] = {
    "submit": (_submit, render.task),
    "task": (_task, render.task),
    "tasks": (_tasks, render.tasks),
    "status": (_status, render.cluster),
    "schedule": (_schedule, _draw_schedule),
    "cancel": (_operation, render.task),
    "retry": (_operation, render.task),
    "requeue": (_operation, render.requeued),
    "drain": (_operation, render.drained),
    "undrain": (_operation, render.drained),
    "members": (_members, _draw_members),
}


def _peers(args: argparse.Namespace) -> list[str]:
    given = args.peer or [os.environ.get("PEER_URL") or DEFAULT_PEER]
    return [url for item in given for url in item.split(",") if url.strip()]


def _run(args: argparse.Namespace) -> int:
    command, draw = COMMANDS[args.command]
    peers = _peers(args)
    if not peers:
        print("error: --peer: no peer URL given", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Client(peers, retry_time=RETRY_TIME, token=args.token, ca=args.ca) as client:
            data = command(client, args)
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    _emit(data, draw, args.json or args.output == "json")
    return EXIT_OK


def _emit(data: Any, draw: Callable[[Any], Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    Console().print(draw(data))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "watch":
        return _watch(args)
    if args.command == "certs":
        return _certs(args)
    return _run(args)
