"""Damaged Parquet files that made Polars' reader abort the whole process (an allocation of 2^61
bytes, found by tests/stress/fuzz_inputs.py). The meter-file parser must turn each into a clear
error or a frame. Each runs in a child process, so a regression fails this test instead of killing
the test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
CHILD = """
import sys
from settlement.metering.errors import UnreadableMeterFile
from settlement.metering.models import MeterFileFormat
from settlement.metering.validation import parse_file

for path in sys.argv[1:]:
    try:
        parse_file(open(path, "rb").read(), MeterFileFormat.PARQUET)
        print("parsed", flush=True)
    except UnreadableMeterFile as exc:
        print("refused:", exc, flush=True)
"""


def test_damaged_parquet_files_are_errors_not_crashes() -> None:
    paths = sorted(DATA.glob("damaged_*.parquet"))
    assert paths
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    outcomes = done.stdout.splitlines()
    assert len(outcomes) == len(paths)
    assert all(line.startswith(("refused:", "parsed")) for line in outcomes)
