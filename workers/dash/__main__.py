"""`python -m workers.dash --host H --port P [--settings FILE] [--log-level LEVEL]`."""

from .cli import main

raise SystemExit(main())
