"""Command line: the edge where arguments, files and the environment become a Config.

This is the only module that calls ``sys.exit`` or turns errors into exit codes:
0 success (even when sites are blocked), 2 bad input (one line on stderr, no traceback),
3 ``run`` stopped but records it had accepted could not be written (the disk stayed full;
the log's ``sink_records_lost`` and the unit's STATUS= give the count).
"""

from __future__ import annotations

import argparse
import difflib
import io
import itertools
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from kzprobe import __version__
from kzprobe.cli.completion import SHELLS
from kzprobe.config import (
    Config,
    LoadedConfig,
    check_config_file,
    load_config,
)
from kzprobe.errors import KzprobeError
from kzprobe.init import CONFIG_NAME
from kzprobe.ops.notify import SystemdEnv

if TYPE_CHECKING:
    from kzprobe.progress import ProgressLine, Tally
    from kzprobe.targets import Target

EXIT_OK = 0
EXIT_USAGE = 2


NO_CONFIG = "no config: run 'kzprobe init' or pass --config FILE"
_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, with a "did you mean"."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {_suggest(message)}\n")
        raise SystemExit(EXIT_USAGE)


def _suggest(message: str) -> str:
    """``... invalid choice: 'mesure' ...; did you mean 'measure'?`` when one is close."""
    match = _CHOICE.search(message)
    if match is None:
        return message
    choices = [c.strip().strip("'") for c in match[2].split(",")]
    close = difflib.get_close_matches(match[1], choices, n=1)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help=f"TOML config file (default: ./{CONFIG_NAME}, made by `kzprobe init`; "
             f"without one this command refuses to run)",
    )


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_globals(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--log-level`` and ``--no-uvloop``, before the command or after it (where they
    default to nothing, so the value given before the command stands)."""
    default = "info" if defaults else argparse.SUPPRESS
    parser.add_argument("--log-level", default=default, choices=_LOG_LEVELS,
                        help="log level (default: info)")
    parser.add_argument("--no-uvloop", action="store_true",
                        default=False if defaults else argparse.SUPPRESS,
                        help="use the stdlib asyncio loop")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kzprobe", description="In-country internet-censorship monitor.",
                     epilog="start with:  kzprobe demo   then:  kzprobe init")
    parser.add_argument("--version", action="version", version=f"kzprobe {__version__}")
    _add_globals(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_commands(sub)
    for command in sub.choices.values():
        _add_globals(command, defaults=False)
    return parser


def _add_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    measure = sub.add_parser(
        "measure", help="measure URLs now; one JSON record per line on stdout",
        epilog="examples:\n  kzprobe measure https://example.org/ --format pretty\n"
               "  cut -d, -f1 list.csv | tail -n +2 | kzprobe measure -",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    measure.add_argument("urls", nargs="+", metavar="URL", help="URLs or endpoint URIs; "
                         "'-' reads them from stdin, one a line")
    measure.add_argument("--format", default="ndjson", choices=("ndjson", "pretty"),
                         help="ndjson: the records (default); pretty: one block per target "
                              "(verdict, evidence, timings)")
    _add_config(measure)

    run = sub.add_parser("run", help="the daemon: sweep the targets on a schedule",
                         epilog="example:  kzprobe run --once --config kzprobe.toml  "
                                "(then: kzprobe report DIR, DIR being its [output] dir)")
    run.add_argument("--once", action="store_true", help="one sweep, then flush, close and exit")
    _add_config(run)

    check = sub.add_parser("check-config", help="validate a config and its target lists: "
                                                "every problem, with its line")
    check.add_argument("file", type=Path)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument("--helper", action="store_true",
                       help="a `kzprobe helper` config: no targets needed (assumed for a "
                            "config with [helper] and no [targets] section)")

    helper = sub.add_parser("helper", help="serve the OONI-compatible control test helper")
    _add_config(helper)

    init = sub.add_parser("init", help=f"write a commented ./{CONFIG_NAME} to start from "
                                       "(asks nothing)")
    init.add_argument("dir", nargs="?", type=Path, default=Path("."),
                      help=f"where to write {CONFIG_NAME} (default: .)")
    init.add_argument("--force", action="store_true", help="overwrite an existing one")
    completion = sub.add_parser("completion", help="print a shell completion script",
                                epilog="example:  source <(kzprobe completion bash)")
    completion.add_argument("shell", choices=SHELLS)
    demo = sub.add_parser("demo", help="sweep a simulated censored network on loopback")
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("data"),
        help="directory for the NDJSON (default: ./data)",
    )
    _add_report(sub)
    export = sub.add_parser("export", help="closed segments and change events into a "
                                           "partitioned Parquet store, incrementally")
    export.add_argument("paths", nargs="+", type=Path, metavar="SEGMENTS",
                        help="segment directories or files; open .part segments wait")
    export.add_argument("--to", required=True, type=Path, metavar="DIR",
                        help="the store (docs/parquet-schema.md)")
    export.add_argument("--memory-limit", default="1GB", metavar="SIZE",
                        help="DuckDB's memory budget (default: 1GB)")


_REPORT_TABLES = ("targets", "changes", "periods", "categories", "networks", "network_compare",
                  "probes", "days", "mechanisms", "events", "outages", "errors")


def _add_report(sub: argparse._SubParsersAction[_Parser]) -> None:
    report = sub.add_parser(
        "report", help="what is blocked, since when, how, where, what changed",
        epilog="examples:\n  kzprobe report data/ --since 24h\n"
               "  kzprobe report data/ --format html --output report.html\n"
               "  kzprobe report data/ --format csv --table changes",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="segment directories or files (.ndjson, .gz, .zst, .part)")
    report.add_argument("--since", help="first UTC time to include (YYYY-MM-DD[ HH:MM:SS], "
                                        "or a time ago: 24h, 7d)")
    report.add_argument("--until", help="UTC time to stop before (same forms)")
    report.add_argument("--format", default="table", choices=("table", "csv", "json", "html"),
                        help="html needs --output FILE")
    report.add_argument("--table", choices=_REPORT_TABLES,
                        help="the table --format csv writes (default: targets; only with csv)")
    report.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    report.add_argument("--export-parquet", type=Path, metavar="DIR",
                        help="also write the measurements as Parquet, partitioned by day")
    report.add_argument("--memory-limit", default="1GB", metavar="SIZE",
                        help="DuckDB's memory budget; beyond it, spill to a temporary "
                             "directory (default: 1GB)")
    report.add_argument("--engine", default="duckdb", choices=("duckdb", "spark"),
                        help="compute the tables with DuckDB (default) or Apache Spark "
                             "(pip install 'kzprobe[spark]', Java 17)")
    report.add_argument("--master", metavar="URL",
                        help="--engine spark: the Spark master (default: local[2]; "
                             "a cluster: spark://HOST:7077)")


def _note(message: str) -> None:
    """What a command did, beside its output (stdout may be the data)."""
    sys.stderr.write(f"kzprobe: {message}\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"kzprobe: warning: {message}\n")


def _config_path(args: argparse.Namespace) -> Path:
    """``--config``, else ``./kzprobe.toml``; never a config the user did not choose (a
    clone's config/kzprobe.toml measures the real internet)."""
    if args.config is not None:
        path: Path = args.config
        return path
    local = Path(CONFIG_NAME)
    if local.is_file():
        return local
    raise KzprobeError(NO_CONFIG)


def _load(path: Path) -> LoadedConfig:
    loaded = load_config(path)
    for warning in loaded.warnings:
        _warn(warning)
    return loaded


def _progress_line(total: int, label: str) -> ProgressLine | None:
    """A progress line only on a terminal, never under systemd (stderr is its log stream)."""
    from kzprobe.progress import ProgressLine

    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    if under_systemd or not sys.stderr.isatty():
        return None
    return ProgressLine(sys.stderr, total, label=label)


def _warn_not_dialled(tally: Tally, *, scope: str) -> None:
    """Once per run: addresses the dial rule refused (their records carry ``x_skipped``)."""
    import structlog

    from kzprobe import failures

    if not tally.skipped or tally.first_skipped is None:
        return
    first = tally.first_skipped
    structlog.get_logger("kzprobe.cli").warning(
        failures.ADDRESS_NOT_DIALLED, count=tally.skipped, scope=scope, example=first.get("ip"),
        reason=first.get("reason"),
        fix="to measure such addresses (labs, tests) add them to [analysis] not_bogon")


def _cmd_measure(args: argparse.Namespace) -> int:
    from kzprobe.progress import Tally
    from kzprobe.service import measure_urls, run_loop
    from kzprobe.targets import parse_target

    urls = _urls(args.urls)
    for index, url in enumerate(urls):
        try:
            parse_target(url)
        except ValueError as exc:
            raise KzprobeError(f"argument URL {index + 1}: {exc}") from None
    config = _load(_config_path(args)).config
    tally, line = Tally(), _progress_line(len(urls), "measured")

    def seen(record: dict[str, Any]) -> None:
        tally.add(record)
        if line is not None:
            line.update(tally, force=tally.records == len(urls))

    out = _PrettyOut() if args.format == "pretty" else sys.stdout
    try:
        code = run_loop(measure_urls(config, urls, out=out, on_record=seen),
                        use_uvloop=not args.no_uvloop)
    finally:
        if line is not None:
            line.clear()
    _warn_not_dialled(tally, scope="this run")
    return code


MAX_STDIN_URLS = 100_000


def _urls(given: Sequence[str]) -> list[str]:
    """The URL arguments, ``-`` replaced by stdin's lines (blank and ``#`` lines skipped)."""
    if "-" not in given:
        return list(given)
    if sys.stdin.isatty():
        sys.stderr.write("kzprobe: reading URLs from stdin, one a line (Ctrl-D to end)\n")
    try:
        read = [line.strip() for line in itertools.islice(sys.stdin, MAX_STDIN_URLS + 1)]
    except UnicodeDecodeError:
        raise KzprobeError("stdin: not UTF-8 text") from None
    if len(read) > MAX_STDIN_URLS:
        raise KzprobeError(f"stdin: more than {MAX_STDIN_URLS} lines; use `kzprobe run` "
                           "with a target list")
    listed = [line for line in read if line and not line.startswith("#")]
    urls = [u for url in given for u in (listed if url == "-" else [url])]
    if not urls:
        raise KzprobeError("stdin: no URLs")
    return urls


class _PrettyOut(io.StringIO):
    """``measure --format pretty``: each NDJSON line ``measure_urls`` writes, as a block."""

    def write(self, text: str) -> int:
        from kzprobe.cli.pretty import block

        for line in text.splitlines():
            if line.strip():
                sys.stdout.write(block(orjson.loads(line)))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from kzprobe.service import daemon_targets, run_loop

    path = _config_path(args)
    config = _load(path).config
    targets, warnings = daemon_targets(config)
    for warning in warnings:
        _warn(warning)
    if not targets:
        raise KzprobeError(f"{path}: no usable targets")
    systemd = SystemdEnv.from_environ(os.environ, os.getpid())
    return run_loop(_serve(config, targets, once=args.once, systemd=systemd),
                    use_uvloop=not args.no_uvloop)


async def _serve(config: Config, targets: list[Target], *, once: bool,
                 systemd: SystemdEnv) -> int:
    from kzprobe.progress import Tally
    from kzprobe.service import Daemon

    started = time.time()
    tally, line = Tally(), _progress_line(len(targets), "measured") if once else None
    warned = False

    async def seen(record: dict[str, Any]) -> None:
        nonlocal warned
        notes = record.get("annotations") or {}
        if not notes.get("kzprobe_sweep"):  # an anchor's record: not the sweep's
            return
        tally.add(record)
        if line is not None:
            line.update(tally)
        if not once and tally.skipped and not warned:  # a daemon: at the first, once
            _warn_not_dialled(tally, scope="first record; further ones are not logged")
            warned = True

    try:
        code = await Daemon(config, targets, systemd=systemd, on_record=seen).serve(once=once)
    finally:
        if line is not None:
            line.clear()
    if once:
        _warn_not_dialled(tally, scope="this run")
        _summary(tally, config, started)
    return code


def _summary(tally: Tally, config: Config, started: float) -> None:
    """``run --once``: what the sweep found, the files it wrote, what to run next."""
    from kzprobe.progress import summary_lines

    out = config.output.dir
    try:
        written = sorted(str(p) for p in out.iterdir()
                         if ".ndjson" in p.name and p.stat().st_mtime >= started - 1)
    except OSError:
        written = []
    for text in summary_lines(tally, outputs=written, output_dir=str(out)):
        sys.stderr.write(text + "\n")


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem at once: errors (exit 2) and warnings (exit 2 under --strict), each
    ``file:line: [section] key: ...``; then the target lists, unless it is a helper's config."""
    from kzprobe.service import daemon_targets
    from kzprobe.text import plural

    check = check_config_file(args.file)
    for error in check.errors:
        sys.stderr.write(f"kzprobe: error: {error}\n")
    for warning in check.warnings:
        _warn(warning)
    if check.loaded is None:
        return EXIT_USAGE
    config = check.loaded.config
    if args.helper or _helper_only(check.loaded):
        if check.warnings and args.strict:
            return EXIT_USAGE
        sys.stdout.write(f"{args.file}: OK, a helper config (listen {config.helper.listen})\n")
        return EXIT_OK
    targets, target_warnings = daemon_targets(config)
    for warning in target_warnings:
        _warn(warning)
    if not targets:
        sys.stderr.write(f"kzprobe: error: {args.file}: no usable targets (a config for "
                         f"`kzprobe helper`? check it with --helper)\n")
        return EXIT_USAGE
    if (check.warnings or target_warnings) and args.strict:
        return EXIT_USAGE
    sys.stdout.write(f"{args.file}: OK, {plural(len(targets), 'target')}\n")
    return EXIT_OK


def _helper_only(loaded: LoadedConfig) -> bool:
    """A config with [helper] and no [targets] section is for ``kzprobe helper`` (one with
    an empty [targets], as ``kzprobe init`` writes, is a probe's that needs its targets)."""
    return "helper" in loaded.raw and "targets" not in loaded.raw


def _cmd_helper(args: argparse.Namespace) -> int:
    from kzprobe.service import run_loop, serve_helper

    config = _load(_config_path(args)).config
    systemd = SystemdEnv.from_environ(os.environ, os.getpid())
    try:
        return run_loop(serve_helper(config, systemd), use_uvloop=not args.no_uvloop)
    except OSError as exc:  # e.g. the listen address is taken
        message = f"helper: cannot listen on {config.helper.listen}: {exc.strerror}"
        raise KzprobeError(message) from None


def _cmd_init(args: argparse.Namespace) -> int:
    """Write the commented config with the safe choices; say what was written and what next."""
    from kzprobe.init import SAFE_CHOICES, initial_config

    path: Path = args.dir / CONFIG_NAME
    if path.exists() and not args.force:
        raise KzprobeError(f"{path}: exists; not overwritten (--force to replace it)")
    shown = str(path) if args.dir != Path(".") else CONFIG_NAME
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(initial_config(shown), encoding="utf-8")
    except OSError as exc:
        raise KzprobeError(f"{path}: cannot write: {exc.strerror}") from None
    config = "" if args.dir == Path(".") else f" --config {path}"
    changes = "; ".join(f"[{s}] {k} = {v}" for s, k, v, _ in SAFE_CHOICES)
    sys.stdout.write(
        f"wrote {shown}: the commented example config, with {changes}\n"
        f"next:\n"
        f"  1. edit it: targets ([targets] urls or files), [probe], [control] helpers\n"
        f"  2. kzprobe check-config {shown}\n"
        f"  3. kzprobe measure{config} https://example.org/ --format pretty\n"
        f"  4. kzprobe run{config} --once     then: kzprobe report {args.dir / 'data'}\n"
        f"(steps 3 and 4 measure the real internet from this machine)\n")
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from kzprobe.cli.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from kzprobe.demo_run import run_demo
    from kzprobe.service import run_loop

    output = args.output.resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"{args.output}: cannot create output directory: {exc.strerror}"
        raise KzprobeError(message) from None
    return run_loop(run_demo(output), use_uvloop=not args.no_uvloop)


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        from kzprobe.report import command
    except ImportError as exc:  # duckdb is a dependency: a broken or partial install
        message = (f"report: {exc.name} is not importable; reinstall kzprobe "
                   f"(pip install --force-reinstall kzprobe)")
        raise KzprobeError(message) from None
    if args.format == "html" and args.output is None and sys.stdout.isatty():
        raise KzprobeError("report: --format html is a file to open in a browser, not for a "
                           "terminal; add --output report.html")
    request = command.request_from(args.paths, since=args.since, until=args.until,
                                   fmt=args.format, table=args.table,
                                   export_parquet=args.export_parquet,
                                   memory_limit=args.memory_limit, engine=args.engine,
                                   master=args.master)
    data = command.run(request, tell=_note)
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        command.write_output(data, args.output)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    """Exit 0 when every closed file was exported; 2 when one could not be (listed)."""
    from kzprobe.report import command, export

    result = export.export(args.paths, args.to,
                           memory_limit=command.check_memory_limit(args.memory_limit))
    for error in result.errors.sorted():
        _warn(f"{error.file}:{error.line}: {error.reason}")
    for path in result.failed:
        sys.stderr.write(f"kzprobe: error: {path}: not exported (see above)\n")
    sys.stdout.write(result.summary() + "\n")
    return EXIT_USAGE if result.failed else EXIT_OK


_COMMANDS = {
    "measure": _cmd_measure,
    "run": _cmd_run,
    "check-config": _cmd_check_config,
    "helper": _cmd_helper,
    "init": _cmd_init,
    "completion": _cmd_completion,
    "demo": _cmd_demo,
    "report": _cmd_report,
    "export": _cmd_export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kzprobe`` command."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_usage(sys.stderr)
        sys.stderr.write("kzprobe: error: a command is required (kzprobe --help lists them)\n")
        return EXIT_USAGE
    args = parser.parse_args(argv)
    from kzprobe.ops.logging import configure_logging

    configure_logging(args.log_level)
    try:
        return _COMMANDS[args.command](args)
    except KzprobeError as exc:
        sys.stderr.write(f"kzprobe: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
