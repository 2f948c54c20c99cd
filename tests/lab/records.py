"""Reading kzprobe records in lab tests, and the analysis expectations (switched off for now).

The raw OONI keys (failure strings in ``queries``, ``tcp_connect``, ``tls_handshakes``,
``requests``) are asserted unconditionally. The analysis keys (``blocking``, ``accessible``,
``interference`` ...) need the analysis and a control helper in the lab; their expected values
are written down here, next to each test, and only checked once the switches below are on.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from .topology import BLOCKPAGE_IP

# ---------------------------------------------------------------------------------------------
# SWITCHES. CHECK_OONI_VERDICT: `blocking`/`accessible` as OONI Web Connectivity LTE 0.5.28 would
# say (needs the analysis wired into `kzprobe measure` and a control helper in the lab).
# CHECK_KZPROBE_VERDICT: kzprobe's own keys (`interference`, `blockpage`, `tls_mitm_issuer`,
# `sni_blocking_confirmed`); the interference codes written in test_lab_measure.py are proposals.
CHECK_OONI_VERDICT = True
CHECK_KZPROBE_VERDICT = True
# ---------------------------------------------------------------------------------------------

Record = dict[str, Any]

# A local fingerprint file (OONI blocking-fingerprints CSV) naming the lab ISP's DNS blockpage
# address, for kzprobe's `[analysis] fingerprint_files`: no bundled set knows 198.18.1.80.
LOCAL_DNS_BLOCKPAGE = "lab.isp_dns_blockpage"
LOCAL_DNS_FINGERPRINTS = (
    "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,"
    "expected_countries,source,exp_url,notes\n"
    f"{LOCAL_DNS_BLOCKPAGE},isp,,dns,full,{BLOCKPAGE_IP},5,ZZ,lab,,\n"
)


def keys(record: Record) -> dict[str, Any]:
    tk: dict[str, Any] = record["test_keys"]
    return tk


def tcp_failures(record: Record) -> list[str | None]:
    return [c["status"]["failure"] for c in keys(record)["tcp_connect"]]


def tls_failures(record: Record) -> list[str | None]:
    return [h["failure"] for h in keys(record)["tls_handshakes"]]


def final_request(record: Record) -> dict[str, Any]:
    """requests[0]: the final hop (requests are newest first)."""
    requests = keys(record)["requests"]
    assert requests, "no HTTP request recorded"
    request: dict[str, Any] = requests[0]
    return request


def body_text(request: dict[str, Any]) -> str:
    """The response body as text (bodies that are not UTF-8 are stored base64)."""
    body = request["response"]["body"]
    if isinstance(body, dict):
        return base64.b64decode(body["data"]).decode("utf-8", "replace")
    return str(body)


def answers(record: Record) -> list[str]:
    return [a["ipv4"] for q in keys(record)["queries"] for a in q["answers"]
            if a.get("answer_type") == "A"]


def issuer_cns(handshake: dict[str, Any]) -> list[str | None]:
    """Issuer CN of each certificate the server sent (leaf first)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    out: list[str | None] = []
    for cert in handshake["peer_certificates"]:
        parsed = x509.load_der_x509_certificate(base64.b64decode(cert["data"]))
        cns = parsed.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        out.append(str(cns[0].value) if cns else None)
    return out


def sni_checks(record: Record) -> list[tuple[str, str | None]]:
    return [(h["server_name"], h["failure"]) for h in keys(record).get("x_sni_checks", [])]


def expect_verdict(record: Record, *, blocking: Any, accessible: Any,
                   interference: Sequence[str] = (), **kzprobe_keys: Any) -> None:
    """The verdict this scenario must produce; each half is a no-op until its switch is on.

    ``kzprobe_keys`` are further kzprobe keys (``blockpage``, ``tls_mitm_issuer``,
    ``sni_blocking_confirmed``): a value to equal, or a callable that must return True.
    """
    tk = keys(record)
    if CHECK_OONI_VERDICT:
        got = (tk.get("blocking"), tk.get("accessible"))
        assert got == (blocking, accessible), f"(blocking, accessible) = {got}"
    if CHECK_KZPROBE_VERDICT:
        assert sorted(tk.get("interference") or []) == sorted(interference), tk.get("interference")
        for key, want in kzprobe_keys.items():
            value = tk.get(key)
            assert want(value) if callable(want) else value == want, f"{key} = {value!r}"
