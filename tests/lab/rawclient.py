"""Plain-Python clients run inside the lab's client namespace to see a fault's raw symptom.

Deliberately independent of kzprobe (stdlib sockets, ssl, a hand-built DNS query), so the
lab's self-checks prove the simulated network before kzprobe is judged against it. Each
subcommand prints one JSON object: the result, or ``{"error": <type>, "errno": <name>}``.

    python rawclient.py resolve NAME
    python rawclient.py dns NAME --server IP [--port 53]
    python rawclient.py tcp IP PORT
    python rawclient.py http URL [--ip IP]
    python rawclient.py tls HOST --ip IP [--cafile PEM]
    python rawclient.py udp IP PORT          (send one datagram; used by the egress-guard check)
    python rawclient.py post URL JSON        (POST a JSON body over HTTP; the reply's JSON)
"""

from __future__ import annotations

import argparse
import errno
import json
import secrets
import socket
import ssl
import struct
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

MAX_BODY = 4 * 1024 * 1024


def _failure(exc: BaseException) -> dict[str, Any]:
    """Describe an exception by type and errno name (ECONNRESET vs EOF matters here)."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    if isinstance(exc, ssl.SSLError):  # its errno is an SSL_ERROR_* code, not an OS errno
        name = None
    out: dict[str, Any] = {"error": type(exc).__name__, "errno": name, "message": str(exc)[:200]}
    if isinstance(exc, ssl.SSLError):
        out["reason"] = exc.reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        out["verify_message"] = exc.verify_message
    return out


def _dns_query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split("."))
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD set, one question
    return header + labels + b"\0" + struct.pack(">HH", 1, 1)  # QTYPE A, QCLASS IN


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def _dns_answers(data: bytes) -> tuple[int, list[str]]:
    """Rcode and the A records of a response (enough for this lab's flat zones)."""
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    ips = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            ips.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return flags & 0x0F, ips


def cmd_dns(args: argparse.Namespace) -> dict[str, Any]:
    """One UDP A query to an explicit server."""
    qid = secrets.randbelow(65536)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(args.timeout)
        sock.sendto(_dns_query(args.name, qid), (args.server, args.port))
        data, _ = sock.recvfrom(4096)
    rcode, ips = _dns_answers(data)
    return {"rcode": rcode, "answers": ips}


def cmd_resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The system resolver (getaddrinfo, so /etc/resolv.conf of this namespace)."""
    infos = socket.getaddrinfo(args.name, 80, socket.AF_INET, socket.SOCK_STREAM)
    return {"answers": sorted({str(i[4][0]) for i in infos})}


def cmd_tcp(args: argparse.Namespace) -> dict[str, Any]:
    with socket.create_connection((args.ip, args.port), timeout=args.timeout):
        return {"connected": True}


def cmd_udp(args: argparse.Namespace) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"kzl", (args.ip, args.port))
    return {"sent": True}


def _read_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < MAX_BODY:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def cmd_http(args: argparse.Namespace) -> dict[str, Any]:
    """GET over HTTP/1.0 (read to EOF), optionally TLS; status, headers and body prefix."""
    url = urllib.parse.urlsplit(args.url)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    sock: socket.socket | ssl.SSLSocket = socket.create_connection(
        (args.ip or host, port), timeout=args.timeout)
    with sock:
        if url.scheme == "https":
            sock = _tls_context(args.cafile).wrap_socket(sock, server_hostname=host)
        path = url.path or "/"
        path += f"?{url.query}" if url.query else ""
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {url.netloc}\r\n"
                     "User-Agent: kzl-rawclient\r\n\r\n".encode("ascii"))
        raw = _read_all(sock)
    if not raw:
        return {"eof": True, "status": None, "body_len": 0}  # closed without a response byte
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return {"status": status, "headers": headers, "body_len": len(body),
            "body": body[:2048].decode("utf-8", "replace")}


def cmd_post(args: argparse.Namespace) -> dict[str, Any]:
    """POST a JSON document (the control helper's THRequest) and parse the JSON reply."""
    request = urllib.request.Request(args.url, data=args.json.encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(request, timeout=args.timeout) as response:
        return {"status": response.status, "json": json.loads(response.read(MAX_BODY))}


def _issuer_cn(der: bytes) -> str | None:
    """Issuer CN of a DER certificate (``cryptography`` is a kzprobe dependency)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    attrs = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def cmd_tls(args: argparse.Namespace) -> dict[str, Any]:
    """Verified handshake; on a verification failure also report the leaf's issuer CN."""
    try:
        with socket.create_connection((args.ip, args.port), timeout=args.timeout) as raw, \
                _tls_context(args.cafile).wrap_socket(raw, server_hostname=args.host) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            return {"version": tls.version(), "issuer_cn": _issuer_cn(der)}
    except ssl.SSLCertVerificationError as exc:
        out = _failure(exc)
        out["issuer_cn"] = _unverified_issuer(args)
        return out


def _unverified_issuer(args: argparse.Namespace) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((args.ip, args.port), timeout=args.timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=args.host) as tls:
        return _issuer_cn(tls.getpeercert(binary_form=True) or b"")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--timeout", type=float, default=3.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("dns")
    s.add_argument("name")
    s.add_argument("--server", required=True)
    s.add_argument("--port", type=int, default=53)
    sub.add_parser("resolve").add_argument("name")
    for name in ("tcp", "udp"):
        s = sub.add_parser(name)
        s.add_argument("ip")
        s.add_argument("port", type=int)
    s = sub.add_parser("http")
    s.add_argument("url")
    s.add_argument("--ip")
    s.add_argument("--cafile")
    s = sub.add_parser("post")
    s.add_argument("url")
    s.add_argument("json")
    s = sub.add_parser("tls")
    s.add_argument("host")
    s.add_argument("--ip", required=True)
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--cafile")
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "dns": cmd_dns, "resolve": cmd_resolve, "tcp": cmd_tcp, "udp": cmd_udp,
    "http": cmd_http, "tls": cmd_tls, "post": cmd_post,
}


def main() -> int:
    args = _parser().parse_args()
    socket.setdefaulttimeout(args.timeout)
    start = time.monotonic()
    try:
        out = COMMANDS[args.cmd](args)
    except (OSError, ValueError) as exc:
        out = _failure(exc)
    out["elapsed"] = round(time.monotonic() - start, 3)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
