"""TLS settings, checked at load time the way the prober and the helper will use them, so
check-config fails where ``run`` would."""

from __future__ import annotations

import ssl
from pathlib import Path

from kzprobe.config.model import TlsConfig
from kzprobe.config.section import _resolve_path, _Section

# Files a config names are read whole, bounded (kzprobe.localfiles): regular files only.
MAX_CA_FILE_BYTES = 16 << 20  # certifi's bundle is ~0.3 MiB
MAX_CERT_FILE_BYTES = 1 << 20  # the helper's certificate chain or key
MAX_ALPN_BYTES = 255  # RFC 7301: a protocol name is 1..255 bytes


def _parse_tls(s: _Section, base: Path | None) -> TlsConfig:
    d = TlsConfig()
    ca = s.string("ca_file", None)
    ca_path = _resolve_path(base, ca) if ca else None
    alpn = _alpn(s, d.alpn)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_path is not None:
        data = s.read_file("ca_file", ca_path, MAX_CA_FILE_BYTES, "CA file")
        try:  # what the prober does at start (probes.tls.make_context), done here
            context.load_verify_locations(cadata=data.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise s.fail("ca_file", f"{ca_path}: not a PEM certificate bundle ({exc})") from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return TlsConfig(
        ca_file=ca_path,
        alpn=alpn,
        max_chain_bytes=s.integer("max_chain_bytes", d.max_chain_bytes, minimum=1024,
                                  maximum=64 << 20),
    )


def _alpn(s: _Section, default: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 7301 protocol names: 1..255 bytes each; printable ASCII (what OpenSSL is given)."""
    alpn = s.strings("alpn", default)
    for name in alpn:
        if not 0 < len(name) <= MAX_ALPN_BYTES or not _printable_ascii(name):
            return s.invalid("alpn", f"each entry is 1..{MAX_ALPN_BYTES} printable ASCII "
                                     f"characters, got {name[:40]!r}", default)
    return alpn


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _check_server_tls(s: _Section, cert: Path | None, key: Path | None) -> None:
    """The helper's certificate and key: regular files, bounded, and a working pair."""
    if cert is None or key is None:
        return
    s.read_file("tls_cert", cert, MAX_CERT_FILE_BYTES, "certificate file")
    s.read_file("tls_key", key, MAX_CERT_FILE_BYTES, "key file")
    try:  # what the helper does at start; the files were just checked to be regular
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise s.fail("tls_cert", f"{cert}, {key}: not a usable certificate and key ({exc})") \
            from None
