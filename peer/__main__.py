"""`python -m peer ...`: the command line (see `peer.cli`)."""

from peer.cli import main

raise SystemExit(main())
