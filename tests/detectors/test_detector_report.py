"""The full Evidently Report rendered for a breached evaluation, with the suite's methods."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from detector_synth import Traffic

from detectors.report import drift_report, render_html
from detectors.suite import DetectorSuite, WindowData

WHEN = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


@pytest.mark.slow
def test_report_uses_the_suites_methods_and_flags_the_drifted_column(tmp_path: Path) -> None:
    source = Traffic(seed=21)
    suite = DetectorSuite()
    reference = suite.prepare(source.frame(3000))
    current = source.frame(1000, vocab_offset=40_000)
    fast = {r.key: r for r in suite.run(reference, current)}
    assert fast["drift.oov[input_text]"].breached

    snapshot = drift_report(suite, reference, current, timestamp=WHEN, name="breach")
    html = render_html(snapshot)
    assert html.lstrip().lower().startswith("<html") or "<!doctype" in html[:200].lower()
    for text in ("input_text.oov", "input_text.length", "prediction", "K-S p_value",
                 "chi-square p_value"):
        assert text in html, text
    # The report's own per-column verdicts agree with the fast pass.
    values = {m["metric_name"]: m["value"] for m in snapshot.dict()["metrics"]}
    oov = next(v for k, v in values.items() if "input_text.oov" in k)
    assert oov == pytest.approx(fast["drift.oov[input_text]"].statistic, abs=1e-12)

    # Optionally into an Evidently workspace that `evidently ui` serves.
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(tmp_path / "workspace"))
    project = workspace.create_project("lifeguard-test")
    workspace.add_run(project.id, snapshot)
    assert len(workspace.list_runs(project.id)) == 1


@pytest.mark.slow
def test_report_can_include_the_embedding_plot_on_a_small_sample() -> None:
    source = Traffic(seed=22, dim=32)
    suite = DetectorSuite()
    reference = suite.prepare(WindowData(source.frame(600), {"input_text": source.embeddings(600)}))
    current = WindowData(source.frame(300), {"input_text": source.embeddings(300, shift=0.3)})
    snapshot = drift_report(suite, reference, current, timestamp=WHEN, include_embeddings=True,
                            plot_rows=60)
    assert "embeddings 'input_text'" in render_html(snapshot)
    names = [m["metric_name"] for m in snapshot.dict()["metrics"]]
    assert "EmbeddingsDrift(embeddings_name=input_text)" in names
    from evidently.legacy.metrics.data_drift import embeddings_drift

    assert embeddings_drift.SAMPLE_CONSTANT == 2500  # restored after the report


def test_report_rejects_windows_with_nothing_to_compare() -> None:
    import pandas as pd

    suite = DetectorSuite()
    with pytest.raises(ValueError, match="nothing to report"):
        drift_report(suite, pd.DataFrame({"x": [1]}), pd.DataFrame({"x": [2]}), timestamp=WHEN)


def test_a_categorical_value_cannot_close_the_reports_script() -> None:
    """A producer chooses categorical values; one that spells ``</script>`` must stay data."""
    from html.parser import HTMLParser

    evil = "</script><script>alert(1)</script>"
    source = Traffic(seed=23)
    suite = DetectorSuite()
    reference = suite.prepare(source.frame(400))
    current = source.frame(200)
    current.loc[::2, "prediction"] = evil
    html = render_html(drift_report(suite, reference, current, timestamp=WHEN, name="breach"))

    assert evil not in html and "<script>alert(1)" not in html

    class Scripts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.bodies: list[str] = []
            self.inside = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "script":
                self.inside = True
                self.bodies.append("")

        def handle_endtag(self, tag: str) -> None:
            self.inside = False if tag == "script" else self.inside

        def handle_data(self, data: str) -> None:
            if self.inside:
                self.bodies[-1] += data

    parser = Scripts()
    parser.feed(html)
    assert not any(body.strip() == "alert(1)" for body in parser.bodies)
    # The value is still in the report, as an escaped JSON string that decodes to it.
    data = next(b for b in parser.bodies if "additional_graphs_" in b)
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in data
