"""The SQL of the report: one scan into table ``m``, then small queries over it.

The state model (docs/report.md) lives here, in ``STATE`` and ``MECHANISM``:
a record is *blocked* when kzprobe saw interference or OONI's ``blocking`` names a
method; *down* when OONI says not blocked but not accessible either (the site failed
for the control too); *accessible* when OONI says not blocked, or an endpoint was
reachable; *unknown* otherwise. Change events follow the *decisive* records only
(blocked or accessible), per target and probe network. Records measured during a network
outage (top-level ``x_outage: true``) are left out of every blocked count and share: their
failures are the outage's, not the censor's. They are not decisive either.

Everything after the scan is written once, in DuckDB's SQL, and runs on every engine:
:mod:`kzprobe.report.dialect` translates it for Spark. So the queries keep to what both
engines mean the same way: ``arg_max`` skips NULL values only when a FILTER says so (Spark's
``max_by`` would not), ties are broken explicitly, and every ORDER BY is total.
"""

from __future__ import annotations

# Only these fields are materialised from each record: the reader skips the rest
# (requests, certificates, bodies), which is what keeps the scan at DuckDB's own speed.
_COLUMNS = """{
    'input': 'JSON', 'measurement_start_time': 'VARCHAR',
    'probe_asn': 'VARCHAR', 'probe_cc': 'VARCHAR', 'probe_network_name': 'VARCHAR',
    'resolver_ip': 'VARCHAR', 'test_name': 'VARCHAR', 'test_version': 'VARCHAR',
    'software_name': 'VARCHAR', 'software_version': 'VARCHAR', 'category_code': 'VARCHAR',
    'test_runtime': 'DOUBLE',
    'annotations': 'STRUCT(kzprobe_sweep VARCHAR, kzprobe_probe_id VARCHAR)',
    'x_network_state': 'JSON', 'x_outage': 'JSON',
    'test_keys': 'STRUCT(blocking JSON, accessible BOOLEAN, reachable BOOLEAN,
        failure VARCHAR, interference VARCHAR[], blockpage VARCHAR, tls_mitm_issuer VARCHAR,
        x_tls_mitm_known VARCHAR, sni_blocking_confirmed BOOLEAN,
        dns_experiment_failure VARCHAR, http_experiment_failure VARCHAR,
        x_attempts INTEGER, x_attempts_agreeing INTEGER)'
}"""

CREATE_TABLE = """
CREATE OR REPLACE TABLE m (
    measurement_start_time TIMESTAMP, input VARCHAR, probe_asn VARCHAR, probe_cc VARCHAR,
    probe_network_name VARCHAR, resolver_ip VARCHAR, test_name VARCHAR, test_version VARCHAR,
    software_name VARCHAR, software_version VARCHAR, category_code VARCHAR,
    test_runtime DOUBLE, sweep_id VARCHAR, state VARCHAR, mechanism VARCHAR,
    ooni_blocking VARCHAR, ooni_blocked BOOLEAN, accessible BOOLEAN, reachable BOOLEAN,
    failure VARCHAR, interference VARCHAR[], blockpage VARCHAR, tls_mitm_issuer VARCHAR,
    x_tls_mitm_known VARCHAR, sni_blocking_confirmed BOOLEAN,
    dns_experiment_failure VARCHAR, http_experiment_failure VARCHAR,
    x_attempts INTEGER, x_attempts_agreeing INTEGER, x_network_state VARCHAR, x_outage BOOLEAN,
    probe_id VARCHAR, bad_file VARCHAR
)"""

STATE = """CASE
        WHEN array_length(interference) > 0 OR ooni_blocked THEN 'blocked'
        WHEN ooni_blocked = false AND tk.accessible = false THEN 'down'
        WHEN ooni_blocked = false OR tk.reachable THEN 'accessible'
        ELSE 'unknown' END"""

MECHANISM = """CASE
        WHEN array_length(interference) > 0 THEN array_to_string(interference, '+')
        WHEN ooni_blocked THEN 'ooni.' || ooni_blocking END"""

# The probe id in a segment's name (kzprobe.storage.naming), for records without one.
_PROBE_IN_NAME = r"-\d{8}T\d{6}Z-([A-Za-z0-9._-]{1,64})-\d+-\d{6,}\.ndjson[^/]*$"

# $1 files, $2 since, $3 until. A row DuckDB could not read (corrupt JSON, not an object)
# arrives all NULL; it and a record without input or time keep their file name in
# bad_file so Python can find their line numbers.
INSERT_SCAN = f"""
INSERT INTO m BY NAME
WITH src AS (
    SELECT * FROM read_json($1, columns = {_COLUMNS}, format = 'newline_delimited',
        ignore_errors = true, filename = true)
), typed AS (
    SELECT * EXCLUDE (x_network_state, x_outage), test_keys AS tk,
        x_network_state AS src_network_state, x_outage AS src_outage,
        try_strptime(measurement_start_time, '%Y-%m-%d %H:%M:%S') AS ts,
        CASE WHEN json_type(input) = 'VARCHAR' THEN input ->> '$' END AS url,
        list_sort(coalesce(test_keys.interference, [])) AS interference,
        CASE WHEN json_type(test_keys.blocking) = 'VARCHAR'
             THEN test_keys.blocking ->> '$' END AS ooni_blocking,
        CASE WHEN json_type(test_keys.blocking) = 'VARCHAR' THEN true
             WHEN test_keys.blocking::VARCHAR = 'false' THEN false END AS ooni_blocked
    FROM src
), checked AS (
    SELECT *, (url IS NOT NULL AND url <> '' AND ts IS NOT NULL) AS ok FROM typed
)
SELECT
    ts AS measurement_start_time, url AS input, probe_asn, probe_cc, probe_network_name,
    resolver_ip, test_name, test_version, software_name, software_version, category_code,
    test_runtime, annotations.kzprobe_sweep AS sweep_id,
    coalesce(annotations.kzprobe_probe_id,
             nullif(regexp_extract(filename, '{_PROBE_IN_NAME}', 1), '')) AS probe_id,
    {STATE} AS state,
    {MECHANISM} AS mechanism,
    ooni_blocking, ooni_blocked, tk.accessible, tk.reachable, tk.failure, interference,
    tk.blockpage, tk.tls_mitm_issuer, tk.x_tls_mitm_known, tk.sni_blocking_confirmed,
    tk.dns_experiment_failure, tk.http_experiment_failure, tk.x_attempts,
    tk.x_attempts_agreeing,
    CASE WHEN json_type(src_network_state) = 'VARCHAR' THEN src_network_state ->> '$' END
        AS x_network_state,
    coalesce(json_type(src_outage) = 'BOOLEAN' AND src_outage::VARCHAR = 'true', false)
        AS x_outage,
    CASE WHEN ok THEN NULL ELSE filename END AS bad_file
FROM checked
WHERE NOT ok OR (($2::TIMESTAMP IS NULL OR ts >= $2::TIMESTAMP)
                 AND ($3::TIMESTAMP IS NULL OR ts < $3::TIMESTAMP))
"""

# The columns of ``m`` that a Parquet store (kzprobe export, docs/parquet-schema.md) holds.
M_COLUMNS = (
    "measurement_start_time", "input", "probe_asn", "probe_cc", "probe_id",
    "probe_network_name", "resolver_ip", "test_name", "test_version", "software_name",
    "software_version", "category_code", "test_runtime", "sweep_id", "state", "mechanism",
    "ooni_blocking", "ooni_blocked", "accessible", "reachable", "failure", "interference",
    "blockpage", "tls_mitm_issuer", "x_tls_mitm_known", "sni_blocking_confirmed",
    "dns_experiment_failure", "http_experiment_failure", "x_attempts", "x_attempts_agreeing",
    "x_network_state", "x_outage",
)

# $1 the store's measurement files, $2 since, $3 until.
INSERT_STORE = f"""
INSERT INTO m BY NAME
SELECT {', '.join(M_COLUMNS)}
FROM read_parquet($1, hive_partitioning = true, union_by_name = true)
WHERE ($2::TIMESTAMP IS NULL OR measurement_start_time >= $2::TIMESTAMP)
  AND ($3::TIMESTAMP IS NULL OR measurement_start_time < $3::TIMESTAMP)
"""

FLAGGED_FILES = """
SELECT bad_file FROM m WHERE bad_file IS NOT NULL GROUP BY bad_file ORDER BY bad_file"""

_T = "'%Y-%m-%d %H:%M:%S'"

# The decisive records at which a target's state starts: its first one, and each one
# whose state (or, when blocked, whose set of interference codes) differs from the one
# before. Ties in time are broken by state and mechanism so the answer is stable. A record
# measured during an outage is no observation (as for the alert tracker).
STARTS = """
WITH seq AS (
    SELECT input, probe_asn, measurement_start_time AS ts, state, mechanism,
        lag(state) OVER w AS prev_state, lag(mechanism) OVER w AS prev_mechanism,
        lag(measurement_start_time) OVER w AS prev_ts
    FROM m WHERE state IN ('blocked', 'accessible') AND NOT x_outage
    WINDOW w AS (PARTITION BY input, probe_asn
                 ORDER BY measurement_start_time, state, mechanism)
)
SELECT * FROM seq
WHERE prev_state IS NULL OR prev_state <> state OR prev_mechanism IS DISTINCT FROM mechanism
"""

# One row per run of a decisive state: from its first record to the last one before
# the next change (or the target's last decisive record).
RUNS = """
WITH last_decisive AS (
    SELECT input, probe_asn, max(measurement_start_time) AS last_ts
    FROM m WHERE state IN ('blocked', 'accessible') AND NOT x_outage GROUP BY ALL
)
SELECT s.input, s.probe_asn, s.state, s.mechanism, s.ts AS start_ts, s.prev_ts AS after_ts,
    coalesce(lead(s.prev_ts) OVER (PARTITION BY s.input, s.probe_asn ORDER BY s.ts),
             l.last_ts) AS end_ts
FROM starts s JOIN last_decisive l USING (input, probe_asn)
"""

# Table ``m`` folded to one row per probe, network, target, state and outage flag (tens of
# thousands of rows for millions of records): the summary, networks, probes and network names
# are computed from it, not by one more pass over ``m`` each. Spark runs this as a hash
# aggregate; an arg_max keyed by (time, value) over ``m`` itself is a sort per query there.
# An arg_max over (last_ts, value) per group equals one over (time, value) per record.
SOURCES = """
SELECT probe_id, probe_asn, probe_cc, probe_network_name, input, state, x_outage,
    count(*) AS n, min(measurement_start_time) AS first_ts,
    max(measurement_start_time) AS last_ts
FROM m GROUP BY ALL
"""

TARGET_STATES = """
WITH g AS (  -- first a few rows per target (one per distinct verdict), then per target
    SELECT input, probe_asn, state, mechanism, category_code, test_name, blockpage,
        tls_mitm_issuer, ooni_blocked, array_length(interference) > 0 AS interfered, x_outage,
        count(*) AS n,
        min(measurement_start_time) AS first_ts, max(measurement_start_time) AS last_ts
    FROM m GROUP BY ALL
), agg AS (
    SELECT input, probe_asn,
        arg_max(category_code, (last_ts, category_code))
            FILTER (WHERE category_code IS NOT NULL)
            AS category_code,
        arg_max(test_name, (last_ts, test_name)) FILTER (WHERE test_name IS NOT NULL)
            AS test_name,
        sum(n)::BIGINT AS measurements,
        coalesce(sum(n) FILTER (WHERE x_outage), 0)::BIGINT AS outage_measurements,
        coalesce(sum(n) FILTER (WHERE state = 'blocked' AND NOT x_outage), 0)::BIGINT
            AS blocked,
        coalesce(sum(n) FILTER (WHERE ooni_blocked AND NOT x_outage), 0)::BIGINT
            AS ooni_blocked,
        coalesce(sum(n) FILTER (WHERE interfered AND NOT x_outage), 0)::BIGINT AS interference,
        arg_max(state, (last_ts, state, mechanism)) AS last_state,
        arg_max_null(mechanism, (last_ts, state, mechanism)) AS last_mechanism,
        min(first_ts) AS first_ts, max(last_ts) AS last_ts,
        min(first_ts) FILTER (WHERE state = 'blocked') AS first_blocked_ts,
        max(last_ts) FILTER (WHERE state = 'blocked') AS last_blocked_ts,
        list_sort(list_distinct(flatten(coalesce(list(string_split(mechanism, '+'))
            FILTER (WHERE mechanism IS NOT NULL), [])))) AS mechanisms,
        list_sort(coalesce(list(DISTINCT blockpage) FILTER (WHERE blockpage IS NOT NULL), []))
            AS blockpages,
        list_sort(coalesce(list(DISTINCT tls_mitm_issuer)
            FILTER (WHERE tls_mitm_issuer IS NOT NULL), [])) AS mitm_issuers
    FROM g GROUP BY input, probe_asn
), current AS (
    SELECT input, probe_asn, max(ts) AS since_ts,
        arg_max(state, (ts, state, mechanism)) AS state,
        arg_max_null(mechanism, (ts, state, mechanism)) AS mechanism,
        arg_max_null(prev_ts, (ts, state, mechanism)) AS since_after_ts,
        count(*) FILTER (WHERE prev_state IS NOT NULL) AS changes
    FROM starts GROUP BY input, probe_asn
)
SELECT a.*, coalesce(c.state, a.last_state) AS state, c.mechanism, c.since_ts, c.since_after_ts,
    coalesce(c.changes, 0) AS changes
FROM agg a LEFT JOIN current c USING (input, probe_asn)
"""


def _ts(column: str, alias: str | None = None) -> str:
    """A timestamp column as OONI's text (UTC), for JSON-ready rows."""
    return f"strftime({column}, {_T}) AS {alias or column.removesuffix('_ts')}"


def ratio4(part: str, whole: str) -> str:
    """``part / whole`` to 4 places, the same on every engine: scaled before dividing, so
    that an exact tie (387360 / 1152000 = 0.33625) is an exact double (3362.5) that both
    round up, where ``round(x, 4)`` of the double 0.33625 gave DuckDB 0.3362 and Spark
    (which rounds its decimal text) 0.3363."""
    return f"round(CAST({part} AS DOUBLE) * 10000 / nullif({whole}, 0)) / 10000"


def _share(count: str) -> str:
    """A blocked count over the measurements taken outside network outages."""
    return f"{ratio4(count, 'measurements - outage_measurements')} AS {count}_share"


TARGETS = f"""
SELECT input, probe_asn, category_code, test_name, measurements,
    blocked, {_share('blocked')}, ooni_blocked, {_share('ooni_blocked')},
    interference, {_share('interference')},
    state, mechanism, {_ts('since_ts')}, {_ts('since_after_ts')}, changes,
    last_state, last_mechanism, {_ts('first_ts', 'first_seen')}, {_ts('last_ts', 'last_seen')},
    {_ts('first_blocked_ts')}, {_ts('last_blocked_ts')},
    mechanisms, blockpages, mitm_issuers, outage_measurements
FROM targets
ORDER BY state = 'blocked' DESC, input, probe_asn
"""

CHANGES = f"""
SELECT input, probe_asn, prev_state AS from_state, prev_mechanism AS from_mechanism,
    state AS to_state, mechanism AS to_mechanism,
    {_ts('prev_ts', 'after')}, {_ts('ts', 'at')}
FROM starts WHERE prev_state IS NOT NULL
ORDER BY ts, input, probe_asn
"""

CATEGORIES = f"""
SELECT category_code, count(*) AS targets,
    count(*) FILTER (WHERE state = 'blocked') AS targets_blocked_now,
    count(*) FILTER (WHERE blocked > 0) AS targets_ever_blocked,
    sum(measurements)::BIGINT AS measurements, sum(blocked)::BIGINT AS blocked,
    {ratio4('sum(blocked)', 'sum(measurements) - sum(outage_measurements)')} AS blocked_share,
    sum(outage_measurements)::BIGINT AS outage_measurements
FROM targets GROUP BY category_code
ORDER BY targets_blocked_now DESC, blocked DESC, category_code NULLS LAST
"""

DAYS = f"""
WITH d AS (  -- per day, network and target first, so distinct targets are a plain count
    SELECT measurement_start_time::DATE AS day, probe_asn, input, count(*) AS n,
        count(*) FILTER (WHERE x_outage) AS x,
        count(*) FILTER (WHERE state = 'blocked' AND NOT x_outage) AS b,
        count(*) FILTER (WHERE ooni_blocked AND NOT x_outage) AS o,
        count(*) FILTER (WHERE array_length(interference) > 0 AND NOT x_outage) AS i
    FROM m GROUP BY ALL
)
SELECT strftime(day, '%Y-%m-%d') AS day, probe_asn,
    sum(n)::BIGINT AS measurements, sum(b)::BIGINT AS blocked,
    {ratio4('sum(b)', 'sum(n) - sum(x)')} AS blocked_share,
    sum(o)::BIGINT AS ooni_blocked, sum(i)::BIGINT AS interference,
    count(*) AS targets, count(*) FILTER (WHERE b > 0) AS targets_blocked,
    sum(x)::BIGINT AS outage_measurements
FROM d GROUP BY d.day, probe_asn ORDER BY d.day, probe_asn
"""

NETWORKS = f"""
WITH agg AS (
    SELECT probe_asn,
        arg_max(probe_cc, (last_ts, probe_cc)) FILTER (WHERE probe_cc IS NOT NULL) AS probe_cc,
        arg_max(probe_network_name, (last_ts, probe_network_name))
            FILTER (WHERE probe_network_name IS NOT NULL) AS probe_network_name,
        sum(n)::BIGINT AS measurements,
        coalesce(sum(n) FILTER (WHERE x_outage), 0)::BIGINT AS outage_measurements,
        coalesce(sum(n) FILTER (WHERE state = 'blocked' AND NOT x_outage), 0)::BIGINT
            AS blocked,
        count(DISTINCT input) AS targets, min(first_ts) AS first_ts, max(last_ts) AS last_ts
    FROM sources GROUP BY probe_asn
), now AS (
    SELECT probe_asn, count(*) FILTER (WHERE state = 'blocked') AS targets_blocked_now
    FROM targets GROUP BY probe_asn
)
SELECT probe_asn, probe_cc, probe_network_name, measurements, targets,
    targets_blocked_now, blocked, {_share('blocked')},
    {_ts('first_ts', 'first_seen')}, {_ts('last_ts', 'last_seen')}, outage_measurements
FROM agg JOIN now USING (probe_asn) ORDER BY probe_asn
"""

MECHANISMS = f"""
WITH codes AS (
    SELECT unnest(string_split(mechanism, '+')) AS mechanism, category_code, input,
        probe_asn, measurement_start_time AS ts
    FROM m WHERE mechanism IS NOT NULL
)
SELECT mechanism, category_code, count(*) AS measurements,
    count(DISTINCT (input, probe_asn)) AS targets,
    {_ts('min(ts)', 'first_seen')}, {_ts('max(ts)', 'last_seen')}
FROM codes GROUP BY ALL ORDER BY measurements DESC, mechanism, category_code NULLS LAST
"""

SUMMARY = f"""
SELECT coalesce(sum(n), 0)::BIGINT AS records, count(DISTINCT input) AS urls,
    count(DISTINCT probe_asn) AS networks,
    {_ts('min(first_ts)', 'first_seen')}, {_ts('max(last_ts)', 'last_seen')},
    (SELECT count(*) FROM targets WHERE state = 'blocked') AS targets_blocked_now,
    (SELECT count(*) FROM starts WHERE prev_state IS NOT NULL) AS changes,
    coalesce(sum(n) FILTER (WHERE x_outage), 0)::BIGINT AS outage_records
FROM sources
"""

PERIODS = f"""
SELECT input, probe_asn, state, mechanism, {_ts('start_ts', 'start')}, {_ts('end_ts', 'end')},
    {_ts('after_ts', 'after')}
FROM runs ORDER BY input, probe_asn, start_ts
"""

# The fleet views. A network is named by its ASN and the latest name a record gave it.
_NETWORK_NAMES = """
    SELECT probe_asn, arg_max(probe_network_name, (last_ts, probe_network_name))
        FILTER (WHERE probe_network_name <> '') AS name
    FROM sources GROUP BY probe_asn"""

# Per target, which networks see it blocked now and since when, which see it open, and
# which see neither (down, unknown): "blocked on AS9198 and AS21299 since ..., open on Kcell".
NETWORK_COMPARE = f"""
WITH names AS ({_NETWORK_NAMES}
), t AS (
    SELECT t.input, t.category_code, t.state, t.since_ts,
        coalesce(t.probe_asn, '?') || coalesce(' ' || n.name, '') AS network
    FROM targets t LEFT JOIN names n ON t.probe_asn IS NOT DISTINCT FROM n.probe_asn
)
SELECT input, max(category_code) AS category_code, count(*) AS networks,
    count(*) FILTER (WHERE state = 'blocked') AS blocked_networks,
    count(*) FILTER (WHERE state = 'accessible') AS open_networks,
    {_ts("min(since_ts) FILTER (WHERE state = 'blocked')", 'blocked_since')},
    list_sort(coalesce(list(network || coalesce(' since ' || strftime(since_ts, {_T}), ''))
        FILTER (WHERE state = 'blocked'), [])) AS blocked_on,
    list_sort(coalesce(list(network) FILTER (WHERE state = 'accessible'), [])) AS open_on,
    list_sort(coalesce(list(network || ': ' || state)
        FILTER (WHERE state NOT IN ('blocked', 'accessible')), [])) AS other_on
FROM t GROUP BY input
ORDER BY blocked_networks DESC, input
"""

# Per probe: where it measures from and when it last wrote. $1 is the report's end (its
# --until, else NULL: the newest record of any probe); a probe silent for hours stands out.
PROBES = f"""
WITH p AS (
    SELECT probe_id,
        arg_max(probe_asn, (last_ts, probe_asn)) FILTER (WHERE probe_asn IS NOT NULL)
            AS probe_asn,
        arg_max(probe_cc, (last_ts, probe_cc)) FILTER (WHERE probe_cc IS NOT NULL) AS probe_cc,
        arg_max(probe_network_name, (last_ts, probe_network_name))
            FILTER (WHERE probe_network_name IS NOT NULL) AS probe_network_name,
        sum(n)::BIGINT AS records,
        coalesce(sum(n) FILTER (WHERE x_outage), 0)::BIGINT AS outage_records,
        count(DISTINCT input) AS targets, min(first_ts) AS first_ts, max(last_ts) AS last_ts
    FROM sources GROUP BY probe_id
), e AS (
    SELECT coalesce($1::TIMESTAMP, max(last_ts)) AS end_ts FROM sources
)
SELECT probe_id, probe_asn, probe_cc, probe_network_name, records, targets,
    {_ts('first_ts', 'first_seen')}, {_ts('last_ts', 'last_seen')},
    round(date_diff('second', last_ts, end_ts) / 3600, 2) AS silent_hours, outage_records
FROM p CROSS JOIN e
ORDER BY silent_hours DESC, probe_id NULLS LAST
"""
