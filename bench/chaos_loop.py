"""Run the ring 3 chaos test N times in a row and report each run and a summary.

    python bench/chaos_loop.py --runs 20

Each run is `pytest tests/test_processes_tasks.py -k chaos -x` in a fresh interpreter,
with its own `--basetemp` under `--keep-dir`: a passing run's directory is deleted, a
failing run's is kept (peer logs in `.../cluster-1/node-N.log`) and its path printed.
Exits 1 if any run failed. The acceptance bar is zero failures (no acknowledged task
lost or duplicated) in 20 runs in a row.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_FILE = "tests/test_processes_tasks.py"
RUN_TIMEOUT = 300.0  # seconds: pytest's own timeout (120 s) should fire long before this
TAIL = 40  # lines of a failing run's output to print


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument(
        "--test-file",
        default=TEST_FILE,
        help=f"the file whose chaos test to run (default {TEST_FILE}; the execution one is "
        "tests/test_processes_execution.py)",
    )
    parser.add_argument("--stop-on-fail", action="store_true", help="stop at the first failing run")
    parser.add_argument(
        "--keep-dir",
        type=Path,
        default=None,
        help="where failing runs keep their data and logs (default: a new temp dir)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def summary_line(output: str) -> str:
    """The test's own one-line summary (printed with -s), if it got that far."""
    for line in output.splitlines():
        if " acknowledged, " in line:
            return line.strip()
    return ""


def run_once(number: int, keep_dir: Path, test_file: str) -> tuple[bool, float, str, Path]:
    basetemp = keep_dir / f"run-{number:03d}"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        test_file,
        "-k",
        "chaos",
        "-x",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        f"--basetemp={basetemp}",
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        ok, output = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        ok, output = False, text + f"\n(run killed after {RUN_TIMEOUT:.0f} s)"
    return ok, time.monotonic() - started, output, basetemp


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_dir = args.keep_dir or Path(tempfile.mkdtemp(prefix="chaos-loop-"))
    keep_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"chaos loop: {args.runs} runs of {args.test_file} -k chaos; failing runs in {keep_dir}",
        flush=True,
    )
    durations: list[float] = []
    failed: list[int] = []
    for number in range(1, args.runs + 1):
        ok, seconds, output, basetemp = run_once(number, keep_dir, args.test_file)
        durations.append(seconds)
        verdict = "PASS" if ok else "FAIL"
        line = f"run {number:3d}/{args.runs}: {verdict} in {seconds:5.1f} s  {summary_line(output)}"
        print(line, flush=True)
        if ok:
            shutil.rmtree(basetemp, ignore_errors=True)
            continue
        failed.append(number)
        print("\n".join("    | " + line for line in output.splitlines()[-TAIL:]))
        print(f"    data and peer logs: {basetemp}", flush=True)
        if args.stop_on_fail:
            break
    ran = len(durations)
    print(
        f"summary: {ran - len(failed)}/{ran} passed, {len(failed)} failed"
        + (f" (runs {', '.join(map(str, failed))})" if failed else "")
        + f"; total {sum(durations):.0f} s, mean {statistics.mean(durations):.1f} s,"
        f" max {max(durations):.1f} s"
    )
    if not failed and args.keep_dir is None:
        shutil.rmtree(keep_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
