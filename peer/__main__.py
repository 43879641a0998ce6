"""`python -m peer ...`: the command line (see `peer.ops.cli`)."""

from peer.ops.cli import main

raise SystemExit(main())
