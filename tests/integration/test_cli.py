"""The command line: bootstrap and the demo, on the embedded default (SQLite, in-process tasks)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from market.cli import app


def test_bootstrap_operator_prints_a_working_key_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLEX_DATABASE_URL", f"sqlite:///{tmp_path / 'flex.db'}")
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    first = runner.invoke(app, ["bootstrap-operator", "--name", "Operator"])
    assert first.exit_code == 0, first.output
    token = re.search(r"(fmk_[0-9a-f]{16}_[A-Za-z0-9_-]{43})", first.output)
    assert token is not None
    second = runner.invoke(app, ["bootstrap-operator"])
    assert second.exit_code == 1
    assert "operator key exists already" in second.output


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """What the README tells a newcomer to run, in a fresh directory with no services; at 60 households
    (the default is 300) to keep the suite fast: the same stages, a smaller world."""
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "COLUMNS": "160"}
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [str(Path(sys.executable).parent / "flexmarket"), "demo", "--households", "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "Clock-change day 2027-03-28 has 92 ISPs" in out
    assert re.search(r"60 households \(\d+ with flexible assets, \d+ in 3 aggregator portfolios\), 4 data centers", out)
    assert "Prices per congestion point" in out
    assert "FlexOrder ISPs" in out
    assert "HTTP Request" not in out
    assert (tmp_path / "flexmarket.db").exists()

    # Settlement: meter data from the utility, delivery, money, penalties, a zero trial balance.
    assert re.search(r"Meter data: 15 files from the utility, [\d,]+ readings stored, 0 rejected", out)
    assert "Settlement of" in out
    paid = re.search(r"Utilisation paid to sellers\s*│\s*([\d.]+)", out)
    penalties = re.search(r"Under-delivery penalties \(to the utility\)\s*│\s*([\d.]+)", out)
    assert paid, out
    assert penalties, out
    assert float(paid.group(1)) > 0
    assert float(penalties.group(1)) > 0  # some sites under-deliver by design
    assert re.search(r"Trial balance \(must be 0\)\s*│\s*0\.00 ", out)
    issued = re.search(r"Statements issued: (\d+)", out)
    assert issued
    assert int(issued.group(1)) > 2

    # The report: one offline file with the plots; the statements as CSV and PDF.
    report = (tmp_path / "flexmarket-report.html").read_text(encoding="utf-8")
    assert report.count("plotly.js v") == 1  # the library inlined once, no CDN
    assert "<script src=" not in report
    for title in ("Prices over the day per congestion point", "Merit order at", "nominated baseline", "Money"):
        assert title in report
    statements = tmp_path / "flexmarket-statements"
    pdfs = sorted(statements.glob("*.pdf"))
    csvs = sorted(statements.glob("*.csv"))
    assert pdfs
    assert len(pdfs) == len(csvs)
    assert all(p.read_bytes().startswith(b"%PDF") for p in pdfs)
    assert any("utility" in p.name for p in csvs)
    assert str(statements / csvs[0].name) in out
