"""Coverage-guided fuzz targets (atheris) for the two readers of untrusted local files.

* ``csv``: a Citizen Lab target list, through ``read_target_file`` (bytes -> UTF-8 ->
  rows -> targets) and ``dedupe``;
* ``ndjson``: a measurement segment, through ``iter_records``, as written, as a valid
  gzip of the same bytes, and as the raw bytes misnamed ``.gz`` (a corrupt archive).

Run one for a fixed number of inputs (what CI does, via tests/fuzz/test_fuzz.py)::

    python tests/fuzz/fuzz_targets.py csv -atheris_runs=5000 [CORPUS_DIR ...]

Any exception other than the documented ones is a crash: atheris prints the input
and exits non-zero. The ``check_*`` functions are importable without atheris.
"""

from __future__ import annotations

import atexit
import gzip
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

_TMP = Path(tempfile.mkdtemp(prefix="kzprobe-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def check_csv(data: bytes) -> None:
    """A target list of any bytes: targets and file:line warnings, or TargetError."""
    from kzprobe.errors import TargetError
    from kzprobe.targets import dedupe, parse_target, read_target_file

    path = _TMP / "list.csv"
    path.write_bytes(data)
    try:
        targets, warnings = read_target_file(path)
    except TargetError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)
        return
    assert all(w.startswith(f"{path}:") for w in warnings), warnings
    unique, _ = dedupe(targets)
    for target in unique:
        again = parse_target(target.url)  # a normalised URL parses to itself
        assert (again.url, again.host, again.port) == (target.url, target.host, target.port), (
            target, again)


def _records(path: Path, max_line_bytes: int) -> tuple[list[dict[str, Any]], list[str]]:
    from kzprobe.storage.segments import iter_records

    errors: list[str] = []

    def on_error(where: Path, line: int, reason: str) -> None:
        assert isinstance(line, int) and line >= 0 and isinstance(reason, str)
        errors.append(reason)

    records = list(iter_records([path], on_error=on_error, max_line_bytes=max_line_bytes))
    assert all(isinstance(record, dict) for record in records)
    return records, errors


def check_ndjson(data: bytes) -> None:
    """A segment of any bytes, plain or gzip: records and reported errors, never a raise."""
    plain = _TMP / "kzprobe-x.ndjson"
    plain.write_bytes(data)
    records, _ = _records(plain, max_line_bytes=1 << 20)
    small, _ = _records(plain, max_line_bytes=64)
    assert len(small) <= len(records)
    packed = _TMP / "kzprobe-y.ndjson.gz"
    packed.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    assert _records(packed, max_line_bytes=1 << 20)[0] == records
    corrupt = _TMP / "kzprobe-z.ndjson.gz"
    corrupt.write_bytes(data)
    _records(corrupt, max_line_bytes=1 << 20)


TARGETS = {"csv": check_csv, "ndjson": check_ndjson}


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer/atheris options]")
    import idna.uts46data  # noqa: F401  # dependencies uninstrumented: instrumenting
    import orjson  # noqa: F401  # idna's tables or aiohttp takes tens of seconds

    import kzprobe.errors

    with atheris.instrument_imports():
        import kzprobe.bogons
        import kzprobe.storage.segments
        import kzprobe.targets  # noqa: F401
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv)
