"""The shared tail of a bench script's `main`: a data dir, the run, the JSON, cleanup.

A run whose cluster misbehaves raises AssertionError; the peer logs are then kept and
their directory named. A data dir the bench made itself is removed after a good run.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_in_data_dir(
    args: Any,
    run: Callable[[Any, Path], dict[str, Any]],
    prefix: str,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run `run(args, data_dir)` and write `args.json`; the process exit code."""
    if args.nodes < 3:
        print("error: --nodes must be at least 3 (a majority must survive a kill)")
        return 2
    own_dir = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix=prefix))
    try:
        result = run(args, data_dir)
    except AssertionError as exc:
        print(f"FAILED: {exc}\n(peer logs kept in {data_dir})", file=sys.stderr)
        return 1
    if report is not None:
        report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if own_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0
