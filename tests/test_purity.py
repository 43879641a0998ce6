"""The pure-core rule, enforced: the lint refuses I/O, clocks, threads and global random in
`election/` and `peer/protocol/`, and nowhere else. Runs ruff on snippets as if they were
files of those folders (ruff reads the rule from pyproject.toml by the path given)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = [
    "import asyncio",
    "import aiohttp",
    "import sqlite3",
    "import socket",
    "import threading",
    "import os",
    "import time",
    "from time import monotonic",
    "import random\nx = random.random()",
    "import random\nx = random.choice([1, 2])",
    "from peer.runtime import node",
]
ALLOWED = ["import random\nrng = random.Random(7)", "import orjson", "import heapq"]


def _lint(source: str, path: str) -> subprocess.CompletedProcess[str]:
    ruff = shutil.which("ruff") or f"{sys.executable} -m ruff"
    return subprocess.run(
        [*ruff.split(), "check", "--select", "TID251", "--stdin-filename", path, "-"],
        input=source + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize("folder", ["election", "peer/protocol"])
@pytest.mark.parametrize("source", FORBIDDEN)
def test_the_pure_core_may_not_import_io_clocks_threads_or_global_random(
    folder: str, source: str
) -> None:
    result = _lint(source, f"{folder}/probe.py")
    assert result.returncode == 1, result.stdout
    assert "TID251" in result.stdout


@pytest.mark.parametrize("source", ALLOWED)
def test_the_pure_core_may_use_a_seeded_generator_and_plain_libraries(source: str) -> None:
    result = _lint(source, "peer/protocol/probe.py")
    assert result.returncode == 0, result.stdout


def test_the_shell_may_do_io() -> None:
    result = _lint("import asyncio\nimport time\nimport sqlite3", "peer/runtime/probe.py")
    assert result.returncode == 0, result.stdout
