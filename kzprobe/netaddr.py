"""``host:port`` text, written and read one way everywhere (IPv6 in brackets).

Pure: no imports, so the analysis (which must not load the I/O stack) and the probes
share it.
"""

from __future__ import annotations


def join_hostport(host: str, port: int | str) -> str:
    """``host:port``, the host in brackets when it holds a colon (Go's net.JoinHostPort)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(text: str) -> tuple[str, int] | None:
    """``(host, port)`` from ``host:port`` or ``[host]:port``; None if malformed.

    Malformed: no port, an empty host, a colon in an unbracketed host (an IPv6 address
    needs brackets), a port that is not 1-5 ASCII digits or is above 65535. The host is
    returned as written; checking or canonicalising it is the caller's business.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 \
            or int(port) > 65535:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
        bad = "[]"
    else:
        bad = "[]:"
    if not host or any(c in bad for c in host):
        return None
    return host, int(port)
