"""The `peer` command line: `serve` runs one peer; more commands come with the task API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from peer.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peer", description="A peer of the task cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one peer")
    serve.add_argument("--config", default="cluster.toml", help="cluster file (cluster.toml)")
    serve.add_argument("--id", type=int, required=True, help="this peer's id in the file")
    serve.add_argument("--log-level", default="INFO")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from peer.server import serve

    try:
        config = load_config(args.config)
        config.node(args.id)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s peer-{args.id} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config, args.id))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return 2
