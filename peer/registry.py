"""Task kinds: the built-ins and the user functions registered with `@task`.

A kind is a name and a callable (async or sync). `echo`, `sleep` and `fail` are always
there; `shell` only when the cluster allows it. User modules named in `task_modules`
are imported and register their functions with the `task` decorator.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

TaskFunction = Callable[[Any], Any]

_USER_KINDS: dict[str, TaskFunction] = {}


class TaskFailed(Exception):
    """Raised by a task to fail its attempt with a message."""


def task(name: str | None = None) -> Callable[[TaskFunction], TaskFunction]:
    """Register a function as a task kind: `@task()` or `@task("name")`."""

    def register(func: TaskFunction) -> TaskFunction:
        _USER_KINDS[name or func.__name__] = func
        return func

    return register


async def _echo(args: Any) -> Any:
    return args


async def _sleep(args: Any) -> Any:
    await asyncio.sleep(float(args["seconds"]))
    return {"slept": args["seconds"]}


async def _fail(args: Any) -> Any:
    message = args.get("message", "failed on purpose") if isinstance(args, dict) else "failed"
    raise TaskFailed(message)


async def _shell(args: Any) -> Any:
    proc = await asyncio.create_subprocess_exec(
        *args["cmd"], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode:
        raise TaskFailed(f"exit {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return {"stdout": out.decode(errors="replace")}


BUILTINS: dict[str, TaskFunction] = {"echo": _echo, "sleep": _sleep, "fail": _fail}


class Registry:
    """The kinds this cluster runs, with a validator for each built-in's arguments."""

    def __init__(self, modules: tuple[str, ...] = (), allow_shell: bool = False) -> None:
        for module in modules:
            importlib.import_module(module)
        self.kinds: dict[str, TaskFunction] = {**BUILTINS, **_USER_KINDS}
        if allow_shell:
            self.kinds["shell"] = _shell

    def __contains__(self, kind: str) -> bool:
        return kind in self.kinds

    def check_args(self, kind: str, args: Any) -> str | None:
        """Why `args` cannot run as `kind`, or None when they look right."""
        if kind == "sleep":
            seconds = args.get("seconds") if isinstance(args, dict) else None
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                return 'sleep needs {"seconds": a non-negative number}'
        if kind == "shell":
            cmd = args.get("cmd") if isinstance(args, dict) else None
            if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
                return 'shell needs {"cmd": [program, arg, ...]}'
        return None
