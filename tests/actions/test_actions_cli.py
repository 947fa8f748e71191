"""``lifeguard step``: one step by hand, its result as JSON, exit codes a script can act on."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from actions.contract import StepContext, StepResult
from daemon.cli import app


def test_step_command_runs_the_gate_both_ways(clf_ctx: StepContext, tuned: StepResult,
                                              tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("policy:\n  gate_margin: 0.05\n")
    common = ["--output-dir", str(tmp_path / "out"), "--snapshot", str(clf_ctx.snapshot),
              "--device", "cpu", "--threads", "2", "--settings", str(settings)]
    runner = CliRunner()
    better = runner.invoke(app, ["step", "evaluate", "--model-dir", str(tuned.model_dir),
                                 "--champion-dir", str(clf_ctx.model_dir), *common])
    assert better.exit_code == 0, better.output
    result = json.loads(better.stdout)
    assert result["step"] == "evaluate" and result["evidence"]["passed"] is True

    worse = runner.invoke(app, ["step", "evaluate", "--model-dir", str(clf_ctx.model_dir),
                                "--champion-dir", str(tuned.model_dir), *common])
    assert worse.exit_code == 1
    failed = json.loads(worse.stdout)
    assert failed["failed"] == "gate" and failed["evidence"]["passed"] is False

    settings.write_text("policy:\n  gate_margn: 0.05\n")  # misspelled: refused before running
    bad = runner.invoke(app, ["step", "evaluate", "--model-dir", str(tuned.model_dir), *common])
    assert bad.exit_code == 2 and "gate_margn" in bad.output
