"""sd_notify without libsystemd: environment parsing and datagrams on a real socket."""

from __future__ import annotations

import socket
import uuid

from kzprobe.ops.notify import Notifier, SystemdEnv


def test_environment_parsing() -> None:
    """NOTIFY_SOCKET is taken as given; WATCHDOG_USEC only for this pid (or no WATCHDOG_PID)."""
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    parsed = SystemdEnv.from_environ(env, pid=42)
    assert parsed == SystemdEnv("/run/systemd/notify", 30_000_000)
    assert parsed.watchdog_interval == 15.0
    assert SystemdEnv.from_environ({**env, "WATCHDOG_PID": "7"}, pid=42).watchdog_usec is None
    assert SystemdEnv.from_environ({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_usec
    assert SystemdEnv.from_environ({"WATCHDOG_USEC": "x"}, pid=1) == SystemdEnv()


def test_notifier_sends_datagrams_to_abstract_and_path_sockets(tmp_path: object) -> None:
    """One datagram per send, fields joined by newlines; identical STATUS lines are not resent."""
    name = f"kzprobe-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        notifier = Notifier("@" + name)
        assert notifier.send("READY=1", "STATUS=up")
        assert server.recv(4096) == b"READY=1\nSTATUS=up"
        assert notifier.status("sweeping  now") and not notifier.status("sweeping now")
        assert server.recv(4096) == b"STATUS=sweeping now"
        notifier.close()


def test_notifier_is_silent_without_systemd_or_socket() -> None:
    """No NOTIFY_SOCKET: a no-op; a vanished socket: False, never an exception."""
    assert not Notifier(None).send("READY=1")
    gone = Notifier(f"@kzprobe-test-nobody-{uuid.uuid4().hex}")
    assert gone.enabled and not gone.send("READY=1")
