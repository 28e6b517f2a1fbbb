"""Parquet uploads read in a child process, so a crash fails this test instead of killing the run.

Two crashes are guarded against:

- damaged files that made Polars' reader abort the whole process (an allocation of 2^61 bytes,
  found by tests/stress/fuzz_inputs.py): the meter-file parser must turn each into a clear error;
- an abort at interpreter exit after any Parquet read, valid or damaged ("terminate called without
  an active exception"): Arrow released the uploaded ``bytes`` on one of its threads while Python
  was finalizing. It struck about one exit in ten with the machine busy, so several children run
  at once and each must exit cleanly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).parent / "data"
CHILD = """
import sys
from settlement.metering.errors import UnreadableMeterFile
from settlement.metering.models import MeterFileFormat
from settlement.metering.validation import parse_file

for path in sys.argv[1:]:
    try:
        frame = parse_file(open(path, "rb").read(), MeterFileFormat.PARQUET)
        print("parsed", frame.height, flush=True)
    except UnreadableMeterFile as exc:
        print("refused:", exc, flush=True)
"""
CHILDREN = 6


def test_parquet_reads_never_crash_the_process(tmp_path: Path) -> None:
    damaged = sorted(DATA.glob("damaged_*.parquet"))
    assert damaged
    valid = tmp_path / "valid.parquet"
    pq.write_table(
        pa.table(
            {
                "meter": ["M-1", "M-1"],
                "isp_start": ["2026-11-25T00:00:00+01:00", "2026-11-25T00:15:00+01:00"],
                "import_kwh": ["0.25", "0.5"],
                "export_kwh": ["0", "0"],
            }
        ),
        valid,
    )
    paths = [*map(str, damaged), str(valid)]
    children = [
        subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
            [sys.executable, "-c", CHILD, *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(CHILDREN)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, out + err[-2000:]
        outcomes = out.splitlines()
        assert len(outcomes) == len(paths)
        assert all(line.startswith("refused: file: not a readable parquet file") for line in outcomes[:-1])
        assert outcomes[-1] == "parsed 2"
