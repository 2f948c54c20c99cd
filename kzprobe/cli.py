"""Command line: the edge where arguments, files and the environment become a Config.

This is the only module that calls ``sys.exit`` or turns errors into exit codes:
0 success (even when sites are blocked), 2 bad input (one line on stderr, no traceback),
3 ``run`` stopped but records it had accepted could not be written (the disk stayed full;
the log's ``sink_records_lost`` and the unit's STATUS= give the count).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kzprobe import __version__
from kzprobe.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    LoadedConfig,
    check_config_file,
    load_config,
)
from kzprobe.errors import KzprobeError
from kzprobe.ops.notify import SystemdEnv

if TYPE_CHECKING:
    from kzprobe.progress import ProgressLine, Tally
    from kzprobe.targets import Target

EXIT_OK = 0
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"TOML config file (default: {DEFAULT_CONFIG_PATH})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kzprobe", description="In-country internet-censorship monitor.")
    parser.add_argument("--version", action="version", version=f"kzprobe {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib asyncio loop")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    measure = sub.add_parser("measure", help="measure URLs now; one JSON record per line on stdout")
    measure.add_argument("urls", nargs="+", metavar="URL")
    _add_config(measure)

    run = sub.add_parser("run", help="the daemon: sweep the targets on a schedule")
    run.add_argument("--once", action="store_true", help="one sweep, then flush, close and exit")
    _add_config(run)

    check = sub.add_parser("check-config", help="validate a config and its target lists: "
                                                "every problem, with its line")
    check.add_argument("file", type=Path)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument("--helper", action="store_true",
                       help="a `kzprobe helper` config: no targets needed (assumed for a "
                            "config with [helper] and no targets)")

    helper = sub.add_parser("helper", help="serve the OONI-compatible control test helper")
    _add_config(helper)

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
    return parser


_REPORT_TABLES = ("targets", "changes", "periods", "categories", "networks", "network_compare",
                  "probes", "days", "mechanisms", "events", "outages", "errors")


def _add_report(sub: argparse._SubParsersAction[_Parser]) -> None:
    report = sub.add_parser("report", help="what is blocked, since when, how, where, what changed")
    report.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="segment directories or files (.ndjson, .gz, .zst, .part)")
    report.add_argument("--since", help="first UTC time to include (YYYY-MM-DD[ HH:MM:SS])")
    report.add_argument("--until", help="UTC time to stop before (YYYY-MM-DD[ HH:MM:SS])")
    report.add_argument("--format", default="table", choices=("table", "csv", "json", "html"))
    report.add_argument("--table", default="targets", choices=_REPORT_TABLES,
                        help="the table --format csv writes (default: targets)")
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


def _warn(message: str) -> None:
    sys.stderr.write(f"kzprobe: warning: {message}\n")


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

    config = _load(args.config).config
    for index, url in enumerate(args.urls):
        try:
            parse_target(url)
        except ValueError as exc:
            raise KzprobeError(f"argument URL {index + 1}: {exc}") from None
    tally, line = Tally(), _progress_line(len(args.urls), "measured")

    def seen(record: dict[str, Any]) -> None:
        tally.add(record)
        if line is not None:
            line.update(tally, force=tally.records == len(args.urls))

    try:
        code = run_loop(measure_urls(config, list(args.urls), on_record=seen),
                        use_uvloop=not args.no_uvloop)
    finally:
        if line is not None:
            line.clear()
    _warn_not_dialled(tally, scope="this run")
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    from kzprobe.service import daemon_targets, run_loop

    config = _load(args.config).config
    targets, warnings = daemon_targets(config)
    for warning in warnings:
        _warn(warning)
    if not targets:
        raise KzprobeError(f"{args.config}: no usable targets")
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
    sys.stdout.write(f"{args.file}: OK, {len(targets)} targets\n")
    return EXIT_OK


def _helper_only(loaded: LoadedConfig) -> bool:
    """A config with [helper] and no targets is for ``kzprobe helper``."""
    targets = loaded.config.targets
    return "helper" in loaded.raw and not (targets.urls or targets.files or targets.groups)


def _cmd_helper(args: argparse.Namespace) -> int:
    from kzprobe.service import run_loop, serve_helper

    config = _load(args.config).config
    systemd = SystemdEnv.from_environ(os.environ, os.getpid())
    try:
        return run_loop(serve_helper(config, systemd), use_uvloop=not args.no_uvloop)
    except OSError as exc:  # e.g. the listen address is taken
        message = f"helper: cannot listen on {config.helper.listen}: {exc.strerror}"
        raise KzprobeError(message) from None


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
    request = command.request_from(args.paths, since=args.since, until=args.until,
                                   fmt=args.format, table=args.table,
                                   export_parquet=args.export_parquet,
                                   memory_limit=args.memory_limit, engine=args.engine,
                                   master=args.master)
    data = command.run(request)
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
    "demo": _cmd_demo,
    "report": _cmd_report,
    "export": _cmd_export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kzprobe`` command."""
    args = build_parser().parse_args(argv)
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
