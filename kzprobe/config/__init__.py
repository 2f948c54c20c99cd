"""Configuration: parsed once, at the edge, into frozen dataclasses.

Nothing below the CLI reads files, the environment or argv for settings; everything
it needs arrives as a :class:`Config`. Errors are :class:`ConfigError` with the file,
key and (where known) line, so the CLI can print one line and exit 2.

Modules: ``model`` (the dataclasses, which hold the defaults), ``section`` (typed reads
from one table), ``positions`` (line numbers of keys), ``parse`` (``parse_config``,
``load_config``, and ``check_config``/``check_config_file`` that collect every problem), and
per area ``sections``, ``network``, ``tokens``, ``tls``, ``control``, ``helper``. This
re-exports every public name, so ``from kzprobe.config import X`` is the one way to import
them.
"""

from __future__ import annotations

from kzprobe.config.helper import MAX_KEY_FILE_BYTES
from kzprobe.config.model import (
    DEFAULT_GROUP,
    MAX_PROBE_ID,
    AnalysisConfig,
    Compression,
    Config,
    ControlConfig,
    ControlHelper,
    DnsConfig,
    GeoipConfig,
    HelperConfig,
    Http3Config,
    LimitConfig,
    OutputConfig,
    ProbeConfig,
    Resolver,
    ScheduleConfig,
    ServiceConfig,
    StoreBodies,
    TargetConfig,
    TargetGroup,
    TimeoutConfig,
    TlsConfig,
    valid_probe_id,
)
from kzprobe.config.network import (
    ALLOW_NETS_MIN_PREFIX,
    ALLOW_NETS_WARN_PREFIX,
    is_loopback_host,
    metrics_exposure,
    parse_resolver,
)
from kzprobe.config.parse import (
    MAX_CONFIG_BYTES,
    ConfigCheck,
    LoadedConfig,
    check_config,
    check_config_file,
    load_config,
    parse_config,
)
from kzprobe.config.section import (
    DAY,
    DEFAULT_MAX_INTEGER,
    DEFAULT_MAX_NUMBER,
    MAX_BYTES,
    MAX_TIMEOUT,
    Fail,
)
from kzprobe.config.sections import MAX_FINGERPRINT_BYTES
from kzprobe.config.tls import MAX_ALPN_BYTES, MAX_CA_FILE_BYTES, MAX_CERT_FILE_BYTES
from kzprobe.config.tokens import MAX_TOKEN_BYTES
from kzprobe.errors import ConfigError

__all__ = [
    "ALLOW_NETS_MIN_PREFIX", "ALLOW_NETS_WARN_PREFIX", "DAY",
    "DEFAULT_GROUP", "DEFAULT_MAX_INTEGER", "DEFAULT_MAX_NUMBER", "MAX_ALPN_BYTES", "MAX_BYTES",
    "MAX_CA_FILE_BYTES", "MAX_CERT_FILE_BYTES", "MAX_CONFIG_BYTES", "MAX_FINGERPRINT_BYTES",
    "MAX_KEY_FILE_BYTES", "MAX_PROBE_ID", "MAX_TIMEOUT", "MAX_TOKEN_BYTES", "AnalysisConfig",
    "Compression", "Config", "ConfigCheck", "ConfigError", "ControlConfig", "ControlHelper",
    "DnsConfig",
    "Fail", "GeoipConfig", "HelperConfig", "Http3Config", "LimitConfig", "LoadedConfig",
    "OutputConfig",
    "ProbeConfig", "Resolver", "ScheduleConfig", "ServiceConfig", "StoreBodies", "TargetConfig",
    "TargetGroup", "TimeoutConfig", "TlsConfig", "check_config", "check_config_file",
    "is_loopback_host", "load_config",
    "metrics_exposure", "parse_config", "parse_resolver", "valid_probe_id",
]
