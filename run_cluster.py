"""Start N peers as OS processes on this machine and watch them: `python run_cluster.py`.

A thin entry: arguments in, `peer.ops.launcher` for the processes, `peer.ops.dashboard` for the
screen. Ctrl-C (or `q`) stops every peer it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from peer.client.asynchronous import TOKEN_ENV
from peer.config import ConfigError, load_config
from peer.ops.dashboard import ClusterWatch
from peer.ops.launcher import (
    STOP_SIGNALS,
    Launcher,
    busy_ports,
    effective_config,
    launch_token,
    write_config,
)

DEFAULT_CONFIG = Path(__file__).resolve().with_name("cluster.toml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_cluster.py",
        description="Start peers 1..N of a cluster as local processes and show a live "
        "dashboard (k N kills a peer, r N restarts it, q or Ctrl-C stops them all).",
    )
    parser.add_argument("--nodes", type=int, default=5, help="how many peers (default 5)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="cluster.toml")
    parser.add_argument("--base-port", type=int, default=None, help="node i listens on P+i-1")
    parser.add_argument(
        "--data-dir", default=None, help="where state, logs and the effective config go"
    )
    parser.add_argument("--headless", action="store_true", help="print events, no dashboard")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = effective_config(
            load_config(args.config), args.nodes, args.base_port, args.data_dir
        )
        config, token = launch_token(config)
    except ConfigError as exc:
        print(f"run_cluster: {exc}", file=sys.stderr)
        return 2
    busy = busy_ports(config)
    if busy:
        taken = ", ".join(f"{n.host}:{n.port}" for n in busy)
        print(f"run_cluster: already in use: {taken} (another cluster?)", file=sys.stderr)
        return 1
    launcher = Launcher(config, write_config(config))
    for sig in STOP_SIGNALS:  # until the watch installs its own handlers
        signal.signal(sig, _interrupt)
    try:
        launcher.start_all()
        poll_with = token or os.environ.get(TOKEN_ENV)  # (a user's own token is never shown)
        watch = ClusterWatch(launcher, args.headless, token=poll_with, shown_token=token)
        asyncio.run(watch.run())
    except KeyboardInterrupt:
        pass
    finally:
        for sig in STOP_SIGNALS:  # stopping takes at most a few seconds: let it finish
            signal.signal(sig, signal.SIG_IGN)
        print(f"stopping {len(config.nodes)} peers…", flush=True)
        launcher.stop_all()
    print(f"stopped; state and logs are in {config.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
