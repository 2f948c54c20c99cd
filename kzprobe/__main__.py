"""``python -m kzprobe``."""

from kzprobe.cli import main

raise SystemExit(main())
