"""The failure strings of every record: one named constant per string, defined only here.

Values are OONI's df-007-errors vocabulary unless a comment says otherwise, so records stay
comparable with OONI's. :mod:`kzprobe.errors` maps exceptions to them; probes and the
analysis compare against them. Pure: this module imports nothing, so the analysis (which
must not load the I/O stack) and the probes share it.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- transport
GENERIC_TIMEOUT_ERROR = "generic_timeout_error"  # a step's deadline passed
EOF_ERROR = "eof_error"  # the peer closed (FIN) before the exchange was complete
CONNECTION_RESET = "connection_reset"  # an RST on an open connection (ECONNRESET, EPIPE)
CONNECTION_REFUSED = "connection_refused"  # an RST answering the SYN (ECONNREFUSED)
CONNECTION_ABORTED = "connection_aborted"  # ECONNABORTED
HOST_UNREACHABLE = "host_unreachable"  # EHOSTUNREACH: an ICMP unreachable or no neighbour
NETWORK_UNREACHABLE = "network_unreachable"  # ENETUNREACH: no route (often: no IPv6)
NETWORK_DOWN = "network_down"  # ENETDOWN
NETWORK_RESET = "network_reset"  # ENETRESET
ADDRESS_NOT_AVAILABLE = "address_not_available"  # EADDRNOTAVAIL: e.g. a bad bind address
ADDRESS_IN_USE = "address_in_use"  # EADDRINUSE
ADDRESS_FAMILY_NOT_SUPPORTED = "address_family_not_supported"  # EAFNOSUPPORT
PERMISSION_DENIED = "permission_denied"  # EACCES, EPERM: a local firewall refused the send
NO_BUFFER_SPACE = "no_buffer_space"  # ENOBUFS
INVALID_ARGUMENT = "invalid_argument"  # EINVAL
INTERRUPTED = "interrupted"  # cancelled before it finished (deadline of the run, shutdown)
CONNECT_ERROR = "connect_error"  # a connect failure no errno explains (also the TH's word)
# kzprobe's: an address the dial rule refuses (loopback, unspecified; for the helper any
# special-purpose range), recorded in ``x_skipped`` with the reason instead of a connect.
ADDRESS_NOT_DIALLED = "address_not_dialled"

# --------------------------------------------------------------------------- DNS
DNS_NXDOMAIN_ERROR = "dns_nxdomain_error"  # the name does not exist (NXDOMAIN)
DNS_NO_ANSWER = "dns_no_answer"  # the name exists, no record of the type asked (NODATA)
DNS_SERVFAIL_ERROR = "dns_servfail_error"  # the resolver answered SERVFAIL
DNS_REFUSED_ERROR = "dns_refused_error"  # the resolver answered REFUSED
DNS_SERVER_MISBEHAVING = "dns_server_misbehaving"  # a malformed or unusable reply
DNS_BOGON_ERROR = "dns_bogon_error"  # every address resolved is one not to dial (loopback...)
DNS_TEMPORARY_FAILURE = "dns_temporary_failure"  # getaddrinfo EAI_AGAIN
DNS_NON_RECOVERABLE_FAILURE = "dns_non_recoverable_failure"  # getaddrinfo EAI_FAIL
# kzprobe's: an encrypted resolver's reply over the size a DNS message can have (a DoH
# server streaming an endless body is cut there), or a DoT length prefix over it.
DNS_REPLY_TOO_LARGE = "dns_reply_too_large"

# --------------------------------------------------------------------------- TLS
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"  # the certificate does not name the host
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"  # no trusted root: self-signed, interception CA
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"  # any other verification error (expired...)
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"  # an alert or a protocol error in the handshake
QUIC_INCOMPATIBLE_VERSION = "quic_incompatible_version"  # QUIC version negotiation failed

# --------------------------------------------------------------------------- HTTP, control
HTTP_INVALID_REDIRECT_LOCATION_HOST = "http_invalid_redirect_location_host"  # unusable Location
HTTP_HEADER_TOO_LARGE = "http_header_too_large"  # kzprobe's: headers over the parser's limits
HTTP_INVALID_RESPONSE = "http_invalid_response"  # kzprobe's: malformed, or a body not decoding
HTTP_TOO_MANY_REDIRECTS = "http_too_many_redirects"  # kzprobe's: aiohttp's redirect limit
HTTP_REQUEST_FAILED = "http_request_failed"  # the test helper's reply: not 200 OK, or too large
JSON_PARSE_ERROR = "json_parse_error"  # the test helper's reply is not the JSON expected

# ------------------------------------------------------- the test helper's THResponse words
TH_DNS_NAME_ERROR = "dns_name_error"  # NXDOMAIN, as the helper reports it
TH_DNS_SERVER_FAILURE = "dns_server_failure"  # SERVFAIL, REFUSED or a misbehaving server
TH_DNS_LOOKUP_ERROR = "dns_lookup_error"  # the request failed because the lookup did
TH_CONNECTION_REFUSED = "connection_refused_error"  # connection_refused, the helper's way
TH_UNKNOWN_ERROR = "unknown_error"  # anything else

# --------------------------------------------------------------------------- sets
# A handshake that got as far as the certificate: the path is open, the peer is not trusted.
CERT_FAILURES = frozenset({SSL_INVALID_HOSTNAME, SSL_UNKNOWN_AUTHORITY, SSL_INVALID_CERTIFICATE})
# Handshake failures that SNI filtering causes: worth a second handshake with a benign SNI.
SNI_CHECK_FAILURES = frozenset({CONNECTION_RESET, GENERIC_TIMEOUT_ERROR, EOF_ERROR})

# --------------------------------------------------------------------------- unknown
UNKNOWN_FAILURE = "unknown_failure"  # OONI's prefix for a failure outside the vocabulary


def unknown(detail: str) -> str:
    """``unknown_failure: <detail>``, OONI's form for a failure with no string of its own."""
    return f"{UNKNOWN_FAILURE}: {detail}"
