"""``python -m kzprobe.simnet``: run one simulated-network component as a process."""

from kzprobe.simnet.cli import main

raise SystemExit(main())
