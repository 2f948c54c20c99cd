"""kzprobe: an in-country internet-censorship monitor with OONI-compatible records."""

__version__ = "0.1.0"
