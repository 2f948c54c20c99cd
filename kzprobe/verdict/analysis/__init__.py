"""Verdict logic: pure, synchronous functions over recorded ``test_keys``.

Nothing here does network I/O; the only file reads are the bundled fingerprint and CA files,
loaded once through :func:`load_fingerprints` and :func:`load_known_cas`.
"""

from __future__ import annotations

from kzprobe.verdict.analysis.certs import (
    CertFacts,
    cert_facts,
    chain_facts,
    known_interception_ca,
)
from kzprobe.verdict.analysis.fingerprints import (
    FingerprintSet,
    Match,
    Signature,
    build_fingerprints,
    load_fingerprints,
    match_dns,
    match_http,
)
from kzprobe.verdict.analysis.interference import (
    CODES,
    AnalysisParams,
    InterferenceResult,
    interference,
    verdict_key,
)
from kzprobe.verdict.analysis.webconnectivity import OoniKeys, analyze

__all__ = [
    "CODES",
    "AnalysisParams",
    "CertFacts",
    "FingerprintSet",
    "InterferenceResult",
    "Match",
    "OoniKeys",
    "Signature",
    "analyze",
    "build_fingerprints",
    "cert_facts",
    "chain_facts",
    "interference",
    "known_interception_ca",
    "load_fingerprints",
    "match_dns",
    "match_http",
    "verdict_key",
]
