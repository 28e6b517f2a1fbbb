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
    """Exactly what the README tells a newcomer to run, in a fresh directory with no services."""
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "COLUMNS": "160"}
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [str(Path(sys.executable).parent / "flexmarket"), "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Clock-change day 2027-03-28 has 92 ISPs" in result.stdout
    assert "24 households (4 in 2 aggregator portfolios)" in result.stdout
    assert "Prices per congestion point" in result.stdout
    assert "FlexOrder ISPs" in result.stdout
    assert "HTTP Request" not in result.stdout
    assert (tmp_path / "flexmarket.db").exists()
