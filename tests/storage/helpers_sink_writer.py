"""Write numbered records through NdjsonSink until killed (for test_sink's kill -9 test).

Usage: python tests/storage/helpers_sink_writer.py DIR RUN
Prints ``ready`` once started, then now and then the sink's ``records_written``: a lower
bound on the records that must survive a SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import orjson
import structlog

from kzprobe.config import OutputConfig
from kzprobe.storage.sink import NdjsonSink


async def main(directory: Path, run: int) -> None:
    output = OutputConfig(dir=directory, rotate_bytes=8192, rotate_seconds=0.25,
                          compress="gzip", fsync_interval=0.02)
    sink = NdjsonSink(output, queue_size=64)
    await sink.start()
    print("ready", flush=True)
    for seq in itertools.count():
        record = {"run": run, "seq": seq, "pad": "x" * (seq % 97)}
        await sink.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if seq % 200 == 0:
            print(sink.stats.records_written, flush=True)
            await asyncio.sleep(0.001)


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is data
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
