"""``python -m kzprobe.simnet <component> [options]``: one component as its own process.

For the network-namespace lab (real ports, root) and for tests that want a separate
process. Each server prints one line ``READY {json of bound addresses}`` on stdout once
it listens, stops cleanly on SIGTERM/SIGINT, and re-reads ``--rules`` (``--sites`` for
``web``) on SIGHUP, keeping the old rules if the file is invalid. ``pki`` writes the
certificate files that ``web`` and ``mitm`` load with ``--pki DIR``, prints READY and exits.
``h3`` serves the ``page`` sites of a ``web`` sites file over HTTP/3 (UDP; read once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from kzprobe.simnet.blockpage import BLOCKPAGE_HTML, BlockpageProxy
from kzprobe.simnet.common import NameRules, Service, parse_hostport
from kzprobe.simnet.dns import Behaviour, DnsServer
from kzprobe.simnet.h3 import H3Server
from kzprobe.simnet.mitm import MitmBox
from kzprobe.simnet.pki import Pki
from kzprobe.simnet.sni_filter import Action, SniFilter, Upstream
from kzprobe.simnet.web import Site, WebServer


@runtime_checkable
class Reloadable(Protocol):
    def load_rules(self, data: object) -> None: ...


class UsageError(Exception):
    """A bad option or file: printed as one line, exit status 2."""


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def _load(target: object, path: Path | None) -> None:
    if path is not None and isinstance(target, Reloadable):
        try:
            target.load_rules(_read_json(path))
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from None


def _upstream(spec: str) -> Upstream:
    if spec in ("original", "none"):
        return None if spec == "none" else "original"
    return parse_hostport(spec)


def _hostport(spec: str) -> tuple[str, int]:
    try:
        return parse_hostport(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status(spec: str) -> int:
    try:
        status = int(spec)
    except ValueError:
        status = 0
    if not 100 <= status <= 599:
        raise argparse.ArgumentTypeError(f"not an HTTP status code: {spec!r}")
    return status


# --------------------------------------------------------------------------- builders


def _build_dns(args: argparse.Namespace) -> DnsServer:
    server = DnsServer(args.listen, authoritative=not args.resolver, tcp=not args.no_tcp,
                       rules=NameRules(Behaviour.parse(args.default)))
    _load(server, args.rules)
    return server


def _build_web(args: argparse.Namespace) -> WebServer:
    pki = _load_pki(args.pki)
    server = WebServer(args.host, [], http_port=args.http_port,
                       https_port=None if args.no_https else args.https_port, ca=pki.public)
    _load(server, args.rules)
    return server


def _build_h3(args: argparse.Namespace) -> H3Server:
    pki = _load_pki(args.pki)
    data = _read_json(args.sites)
    if not isinstance(data, list):
        raise UsageError(f"{args.sites}: expected a JSON list of site objects")
    return H3Server(args.host, args.port, [Site.from_json(obj) for obj in data], ca=pki.public)


def _build_sni_filter(args: argparse.Namespace) -> SniFilter:
    rules = NameRules(Action.parse(args.default))
    for item in args.block:
        name, _, spec = item.partition("=")
        rules.set(name, Action.parse(spec or "reset"))
    server = SniFilter(args.listen, _upstream(args.upstream), rules=rules,
                       blackhole_seconds=args.blackhole_seconds)
    _load(server, args.rules)
    return server


def _build_blockpage(args: argparse.Namespace) -> BlockpageProxy:
    html = BLOCKPAGE_HTML if args.html is None else _read_text(args.html)
    server = BlockpageProxy(args.listen, _upstream(args.upstream), tuple(args.block),
                            html=html, status=args.status, block_all=args.block_all)
    _load(server, args.rules)
    return server


def _build_mitm(args: argparse.Namespace) -> MitmBox:
    pki = _load_pki(args.pki)
    return MitmBox(args.listen, _upstream(args.upstream), pki.qaznet,
                   upstream_ca=pki.public.cert_pem, default_name=args.default_name)


def _load_pki(directory: Path) -> Pki:
    try:
        return Pki.load(directory)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load PKI from {directory} (run the pki command): {exc}") from None


BUILDERS: dict[str, Callable[[argparse.Namespace], Service]] = {
    "dns": _build_dns, "web": _build_web, "h3": _build_h3, "sni-filter": _build_sni_filter,
    "blockpage": _build_blockpage, "mitm": _build_mitm,
}


# --------------------------------------------------------------------------- running


def _reload(service: Service, path: Path) -> None:
    try:
        _load(service, path)
        print(f"reloaded {path}", file=sys.stderr, flush=True)
    except UsageError as exc:
        print(f"reload failed, keeping old rules: {exc}", file=sys.stderr, flush=True)


async def serve(component: str, service: Service, rules: Path | None) -> None:
    """Start, print READY, wait for SIGTERM/SIGINT (SIGHUP reloads ``rules``), stop."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if rules is not None and isinstance(service, Reloadable):
        loop.add_signal_handler(signal.SIGHUP, _reload, service, rules)
    await service.start()
    try:
        print("READY " + json.dumps({"component": component, **service.addresses()}), flush=True)
        await stopping.wait()
    finally:
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _pki(args: argparse.Namespace) -> int:
    files = Pki.generate(args.leaf_key).write(args.dir)
    print("READY " + json.dumps({"component": "pki", "dir": str(files.dir),
                                 "ca_file": str(files.ca_file),
                                 "qaznet_root": str(files.qaznet_root)}), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kzprobe.simnet",
                                     description="Components of kzprobe's simulated censored "
                                                 "internet, one per process.")
    sub = parser.add_subparsers(dest="component", required=True)
    p = sub.add_parser("pki", help="write the public CA and Qaznet chain files, then exit")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--leaf-key", choices=("rsa-e3", "ec"), default="rsa-e3")
    _add_dns(sub.add_parser("dns", help="DNS server (UDP+TCP) with per-name behaviours"))
    _add_web(sub.add_parser("web", help="HTTP/HTTPS virtual hosts"))
    p = sub.add_parser("h3", help="HTTP/3 (QUIC) for the page sites of a web sites file")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--sites", type=Path, required=True, help="JSON list of sites")
    _add_relay(sub.add_parser("sni-filter", help="SNI/Host filtering TCP relay"), "original")
    _add_relay(sub.add_parser("blockpage", help="transparent HTTP proxy serving a blockpage"),
               "none")
    p = sub.add_parser("mitm", help="TLS interception with the Qaznet chain")
    p.add_argument("--listen", type=_hostport, required=True)
    p.add_argument("--upstream", default="original")
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--default-name", default="localhost")
    return parser


def _add_dns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", type=_hostport, required=True)
    p.add_argument("--default", default="answer", help="behaviour for unlisted names, "
                   "e.g. forward:198.18.0.53:53")
    p.add_argument("--resolver", action="store_true", help="answer with AA=0 (an ISP resolver)")
    p.add_argument("--no-tcp", action="store_true")
    p.add_argument("--rules", type=Path, help="JSON {default, rules, zone, cnames}")


def _add_web(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--no-https", action="store_true")
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--sites", dest="rules", type=Path, required=True, help="JSON list of sites")


def _add_relay(p: argparse.ArgumentParser, upstream: str) -> None:
    p.add_argument("--listen", type=_hostport, required=True)
    p.add_argument("--upstream", default=upstream,
                   help="ip:port, 'original' (SO_ORIGINAL_DST) or 'none'")
    p.add_argument("--block", action="append", default=[],
                   help="NAME=ACTION (sni-filter) or NAME (blockpage); repeatable")
    p.add_argument("--rules", type=Path, help="JSON {default, rules}")
    if upstream == "original":
        p.add_argument("--default", default="pass")
        p.add_argument("--blackhole-seconds", type=float, default=120.0)
    else:
        p.add_argument("--block-all", action="store_true")
        p.add_argument("--html", type=Path, help="UTF-8 page to serve instead of the built-in "
                       "KZ blockpage (e.g. one no fingerprint knows)")
        p.add_argument("--status", type=_status, default=200,
                       help="HTTP status of the blockpage response (default 200)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.component == "pki":
            return _pki(args)
        service = BUILDERS[args.component](args)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.component, service, getattr(args, "rules", None)))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
