"""``kzprobe helper``: an OONI-compatible Web Connectivity test helper (the control vantage).

It answers OONI's ``THRequest`` with a ``THResponse`` (probe-cli ``internal/model/th.go``):
DNS from the helper's own resolvers, TCP connects and TLS handshakes to the endpoints,
and one HTTP fetch, all measured with kzprobe's own probe steps from outside the
censored network. Because the protocol is OONI's, OONI probes can use it and kzprobe can
use OONI's helpers.

It faces the internet, so it is an SSRF risk and a would-be open proxy: it never dials
special-purpose addresses (literal, resolved, IPv4-mapped, odd spellings, or reached by
redirect) unless ``[helper] allow_nets`` lists them, dials only ``allowed_ports``, refuses
to listen beyond loopback without a token, and bounds request size, requests in flight,
bytes fetched (per request and per client), per-client rate and connections, the global
request rate, and time per request. Behind a reverse proxy, ``trusted_proxies`` say
whose forwarding headers name the client.

The package: :mod:`~kzprobe.helper.server` (HTTP front, auth, limits, connection gate),
:mod:`~kzprobe.helper.th` (THResponse over the measurement flow) and
:mod:`~kzprobe.helper.policy` (dial policy, client addresses, budgets). Importing the
package loads the server (the CLI and the demo start it); this module only re-exports.
"""

from kzprobe.helper.policy import ClientTable, DialPolicy, client_address, client_bucket
from kzprobe.helper.server import (
    HelperServer,
    RunningHelper,
    _server_ssl,
    start_helper,
    startup_warnings,
)
from kzprobe.helper.th import BadRequest, Helper

__all__ = ["BadRequest", "ClientTable", "DialPolicy", "Helper", "HelperServer", "RunningHelper",
           "_server_ssl", "client_address", "client_bucket", "start_helper", "startup_warnings"]
