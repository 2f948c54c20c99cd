"""A transparent HTTP proxy that answers blocked Hosts with an ISP blockpage.

Requests for other Hosts are relayed to the upstream site byte for byte (the proxy only
reads the first request to decide). With ``upstream=None`` and the default rule
``blockpage`` it is a blockpage *server*, the target of a DNS redirect.

The page text comes from real fingerprint sets, so a matcher built from them fires:

* ``Страница заблокирована`` ("page blocked") is Censored Planet ``d_corp_kz_ps``
  (``blockpage_signatures.json`` line 252, censoredplanet-analysis @31830c6e, Apache-2.0;
  assets-censoredplanet @fcbafca6, BSD-3; in OONI blocking-fingerprints as
  ``cp.d_corp_kz_ps``), the only entry labelled KZ. Inside ``<title>`` it is also
  ``f_gen_ru_16_satellite``.
* ``Ресурста ақпараттық қауіпсіздікке төнетін қауіп-қатер бар`` (Kazakh: "the resource
  threatens information security") is Censored Planet ``f_gen_ru_8_satellite``.
"""

from __future__ import annotations

from kzprobe.simnet.common import HostPort, NameRules
from kzprobe.simnet.sni_filter import Action, SniFilter, Upstream

BLOCKPAGE_PHRASE = "Страница заблокирована"  # Censored Planet d_corp_kz_ps
BLOCKPAGE_PHRASE_KK = "Ресурста ақпараттық қауіпсіздікке төнетін қауіп-қатер бар"  # f_gen_ru_8
BLOCKPAGE_FINGERPRINTS = ("d_corp_kz_ps", "f_gen_ru_16_satellite", "f_gen_ru_8_satellite")

BLOCKPAGE_HTML = f"""<!DOCTYPE html>
<html lang="ru"><head><meta charset="utf-8"><title>{BLOCKPAGE_PHRASE}</title></head>
<body><h1>{BLOCKPAGE_PHRASE}</h1>
<p>{BLOCKPAGE_PHRASE_KK}.</p>
<p>Доступ к ресурсу ограничен по решению уполномоченного органа.</p>
</body></html>
"""


def blockpage_response(html: str = BLOCKPAGE_HTML, status: int = 200) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    body = html.encode("utf-8")
    reason = {200: "OK", 403: "Forbidden", 451: "Unavailable For Legal Reasons"}.get(status, "OK")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n")
    return head.encode("ascii") + body


class BlockpageProxy(SniFilter):
    """:class:`SniFilter` whose block action serves the blockpage to HTTP clients."""

    def __init__(self, listen: HostPort, upstream: Upstream, blocked: tuple[str, ...] = (), *,
                 html: str = BLOCKPAGE_HTML, status: int = 200, block_all: bool = False,
                 idle_timeout: float = 30.0, exempt: frozenset[str] = frozenset()) -> None:
        default = Action("blockpage" if block_all or upstream is None else "pass")
        rules = NameRules(default, {name: Action("blockpage") for name in blocked})
        super().__init__(listen, upstream, rules=rules, idle_timeout=idle_timeout,
                         blockpage=blockpage_response(html, status), exempt=exempt)
        self.default_spec = default.kind
