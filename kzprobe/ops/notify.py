"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per message.

The protocol is a documented, stable wire format (``KEY=value`` lines sent as one
datagram to the AF_UNIX socket named in ``$NOTIFY_SOCKET``; a leading ``@`` means the
abstract namespace), so twenty lines here beat a C binding. Notifications are
best-effort: a full or vanished socket never disturbs measuring.

The environment is read by the CLI (:meth:`SystemdEnv.from_environ`) and passed down.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger("kzprobe.ops.notify")

_MAX_STATUS = 1024  # characters of one STATUS= line; systemctl shows one line anyway


@dataclass(frozen=True, slots=True)
class SystemdEnv:
    """What systemd told the service: where to notify, and the watchdog period."""

    notify_socket: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str], pid: int) -> SystemdEnv:
        """Parse ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (for this pid)."""
        address = env.get("NOTIFY_SOCKET") or None
        usec_text, watchdog_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
        if watchdog_pid and watchdog_pid != str(pid):
            usec = None  # the watchdog was meant for another process (our parent)
        return cls(notify_socket=address, watchdog_usec=usec)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6


def _address(spec: str) -> str:
    return "\0" + spec[1:] if spec.startswith("@") else spec


class Notifier:
    """Sends ``KEY=value`` notifications; a no-op when not started by systemd."""

    def __init__(self, notify_socket: str | None) -> None:
        self._address = _address(notify_socket) if notify_socket else None
        self._sock: socket.socket | None = None
        self.sent = 0
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of ``fields``; True if it left, False (never raises) otherwise."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # full queue, socket gone: the next message may get through
            log.debug("notify_failed", error=str(exc), fields=fields[:1])
            return False
        self.sent += 1
        return True

    def status(self, text: str) -> bool:
        """``STATUS=`` for ``systemctl status``; repeated identical lines are not resent."""
        line = " ".join(text.split())[:_MAX_STATUS]
        if line == self._last_status:
            return False
        self._last_status = line
        return self.send(f"STATUS={line}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
