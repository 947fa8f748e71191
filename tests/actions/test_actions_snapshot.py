"""The snapshot format, the holdout split, and the context's validation and JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from actions.context import ActionPolicy, StepContext, StepResult, TrainConfig
from actions.errors import ActionError, BadInput, PermanentError, ResourceExhausted
from actions.snapshot import (
    classifier_pairs,
    generator_pairs,
    read_snapshot,
    split_holdout,
    write_snapshot,
)


def test_rows_parse_every_input_and_target_shape(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path / "s.jsonl", [
        {"request_id": "a", "text": "good screen", "label": "positive", "ts": 1},
        {"request_id": "b", "input": {"text": "hi"}, "reference": " there",
         "ts": "2026-11-29T00:00:00Z"},
        {"request_id": "c", "input": {"b": 2, "a": 1.5}, "label": "negative", "extra": True},
        {"request_id": "d", "text": "q", "rating": 0.9, "output": "fine answer"},
        {"request_id": "e", "text": "q", "rating": 0.1, "output": "bad answer"},
    ])
    rows = read_snapshot(path)
    assert [r.text for r in rows] == ["good screen", "hi", "a: 1.5; b: 2", "q", "q"]
    pairs, skipped = classifier_pairs(rows, ("negative", "positive"))
    assert pairs == [("good screen", 1), ("a: 1.5; b: 2", 0)] and skipped == 3
    gen, skipped = generator_pairs(rows)
    assert gen == [("hi", " there"), ("q", "fine answer")] and skipped == 3


def test_repeated_request_id_keeps_the_last_row(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path / "s.jsonl", [
        {"request_id": "a", "text": "x", "label": "negative"},
        {"request_id": "b", "text": "y", "label": "negative"},
        {"request_id": "a", "text": "x", "label": "positive"},
    ])
    rows = read_snapshot(path)
    assert [(r.request_id, r.label) for r in rows] == [("b", "negative"), ("a", "positive")]


@pytest.mark.parametrize("line, fragment", [
    ('{"text": "x", "label": "a"}', "request_id"),
    ('{"request_id": "a", "label": "a"}', "'text' or"),
    ('{"request_id": "a", "text": "x"}', "needs a label"),
    ('{"request_id": "a", "text": "x", "label": "a", "reference": "b"}', "exclude"),
    ('{"request_id": "a", "text": "x", "rating": 1.5}', "[0, 1]"),
    ('{"request_id": "a", "text": "x", "rating": "high"}', "number"),
    ("[1, 2]", "not a JSON object"),
    ("{oops", "invalid JSON"),
])
def test_bad_rows_are_refused_with_their_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"request_id": "ok", "text": "x", "label": "a"}\n' + line + "\n")
    with pytest.raises(BadInput, match=r"s\.jsonl:2") as info:
        read_snapshot(path)
    assert fragment in str(info.value)


def test_holdout_split_is_deterministic_disjoint_and_stable_as_data_grows(tmp_path: Path) -> None:
    rows = [{"request_id": f"req-{i}", "text": "t", "label": "a"} for i in range(2000)]
    first = read_snapshot(write_snapshot(tmp_path / "a.jsonl", rows[:1000]))
    grown = read_snapshot(write_snapshot(tmp_path / "b.jsonl", rows))
    train, holdout = split_holdout(first, 0.2)
    train2, holdout2 = split_holdout(grown, 0.2)
    ids = {r.request_id for r in holdout}
    assert ids.isdisjoint(r.request_id for r in train)
    assert 150 <= len(holdout) <= 250  # hash buckets: about 20%
    assert ids == {r.request_id for r in holdout2 if int(r.request_id[4:]) < 1000}
    assert {r.request_id for r in train} <= {r.request_id for r in train2}
    with pytest.raises(ValueError):
        split_holdout(first, 1.0)


def test_context_validates_and_travels_as_json(tmp_path: Path) -> None:
    ctx = StepContext(run_id="r1", model_dir=tmp_path / "m", output_dir=str(tmp_path / "o"),  # type: ignore[arg-type]
                      snapshot=tmp_path / "s.jsonl", threads=2,
                      policy=ActionPolicy(gate_margin=0.01), train=TrainConfig(method="lora"))
    assert isinstance(ctx.output_dir, Path)
    raw = json.loads(json.dumps(ctx.to_dict()))
    assert StepContext.from_dict(raw) == ctx
    with pytest.raises(ValueError, match="unknown"):
        StepContext.from_dict({**raw, "modle_dir": "x"})
    with pytest.raises(ValueError):
        StepContext(run_id="", model_dir=tmp_path, output_dir=tmp_path)
    with pytest.raises(ValueError):
        StepContext(run_id="r", model_dir=tmp_path, output_dir=tmp_path, threads=0)
    with pytest.raises(ValidationError):
        ActionPolicy(gate_margn=0.1)  # type: ignore[call-arg]  # misspelled: refused
    with pytest.raises(ValidationError):
        TrainConfig(batch_size=0)
    result = StepResult("fine_tune", "r1", "k" * 64, tmp_path, tmp_path, False, {"a": 1}, {})
    assert StepResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_exception_tree_says_what_the_runner_can_do() -> None:
    assert issubclass(BadInput, PermanentError) and issubclass(PermanentError, ActionError)
    assert not BadInput("x").retryable
    assert ResourceExhausted("oom").retryable


def test_actions_never_import_the_daemon_and_deploy_never_imports_actions() -> None:
    import ast

    root = Path(__file__).resolve().parents[2]
    for folder, banned in (("actions", "daemon"), ("deploy", "actions")):
        for path in (root / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    assert name.split(".")[0] != banned, f"{path} imports {name}"


def test_running_out_of_memory_or_disk_is_retryable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from actions import steps

    ctx = StepContext(run_id="r", model_dir=tmp_path, output_dir=tmp_path)

    def full_disk(_: StepContext) -> StepResult:
        raise OSError(errno.ENOSPC, "No space left on device")

    def bug(_: StepContext) -> StepResult:
        raise RuntimeError("shape mismatch")

    monkeypatch.setitem(steps.STEPS, "fine_tune", full_disk)
    with pytest.raises(ResourceExhausted):
        steps.run_step("fine_tune", ctx)
    monkeypatch.setitem(steps.STEPS, "fine_tune", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug stays a bug
        steps.run_step("fine_tune", ctx)
    with pytest.raises(ValueError, match="unknown step"):
        steps.run_step("deploy", ctx)
