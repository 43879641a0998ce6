"""Example task functions. Run a cluster with them:

    # cluster.toml
    [cluster]
    task_modules = ["examples.tasks"]

then `python -m peer submit word_count --args '{"text": "a b a"}' --wait`.

A task function takes the task's `args` (any JSON value) and returns a JSON-serialisable
result. Async functions run on the peer's event loop; plain functions run in a thread
pool, so blocking work (files, CPU, a database driver) does not stall the peer. Raise
`TaskFailed("why")` (or any exception) to fail the attempt; it is retried with backoff
until `max_attempts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from typing import Any

from peer.registry import TaskFailed, task


@task()
def word_count(args: Any) -> dict[str, int]:
    """Sync: counts words in {"text": "..."} (runs in a thread)."""
    text = args.get("text") if isinstance(args, dict) else None
    if not isinstance(text, str):
        raise TaskFailed('word_count needs {"text": "..."}')
    return dict(Counter(text.split()))


@task("sha256")
def digest(args: Any) -> str:
    """Sync, registered under another name: the SHA-256 of {"data": "..."}."""
    return hashlib.sha256(str(args.get("data", "")).encode()).hexdigest()


@task()
async def countdown(args: Any) -> list[int]:
    """Async: counts down from {"n": 3}, pausing {"pause": 0.1} s between steps."""
    n, pause = int(args.get("n", 3)), float(args.get("pause", 0.1))
    out = []
    for i in range(n, 0, -1):
        out.append(i)
        await asyncio.sleep(pause)
    return out


@task()
def needs_file(args: Any) -> int:
    """Sync: the size of the file {"path": "..."}; fails until that file exists (so a
    retry after it appears succeeds)."""
    path = args.get("path") if isinstance(args, dict) else None
    if not isinstance(path, str):
        raise TaskFailed('needs_file needs {"path": "..."}')
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise TaskFailed(f"no file {path}: {exc.strerror}") from None
