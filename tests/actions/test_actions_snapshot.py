"""The snapshot format, the holdout split, and the step contract: the context's validation,
the worker's spec file round trip, the error tree's classification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from actions.contract import (
    DeployTarget,
    StepContext,
    StepResult,
    WorkerSettings,
    WorkerSpec,
    content_sha256,
)
from actions.errors import (
    BadInput,
    GateFailed,
    PermanentStepError,
    ResourceExhausted,
    RetryableStepError,
    StepError,
    is_retryable,
)
from actions.settings import ActionPolicy, TrainConfig
from actions.snapshot import (
    classifier_pairs,
    generator_pairs,
    read_snapshot,
    split_holdout,
    write_snapshot,
)
from deploy.config import FleetConfig
from lifeguard.errors import IntegrityError, LifeguardError


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


def test_context_validates_and_the_spec_file_round_trips(tmp_path: Path) -> None:
    fleet = FleetConfig(replicas=["http://127.0.0.1:1"], repository=tmp_path / "repo")
    target = DeployTarget(fleet=fleet, state_path=tmp_path / "state.db",
                          api_url="http://127.0.0.1:2", token="s3cret")  # type: ignore[arg-type]
    ctx = StepContext(run_id="r1", model_dir=tmp_path / "m", output_dir=str(tmp_path / "o"),  # type: ignore[arg-type]
                      snapshot=tmp_path / "s.jsonl", threads=2, deploy=target,
                      policy=ActionPolicy(gate_margin=0.01), train=TrainConfig(method="lora"),
                      progress=print)
    assert isinstance(ctx.output_dir, Path) and "s3cret" not in repr(ctx)
    spec = WorkerSpec(ref="fine_tune", context=ctx, parent_pid=1,
                      result_path=tmp_path / "r.json")
    text = spec.model_dump_json()
    assert '"s3cret"' in text and "progress" not in text  # the token reaches the worker
    back = WorkerSpec.model_validate_json(text)
    assert back.context == ctx.model_copy(update={"progress": None})
    assert back.context.deploy is not None and back.context.deploy.token is not None
    assert back.context.deploy.token.get_secret_value() == "s3cret"
    raw = json.loads(text)
    with pytest.raises(ValidationError, match="modle_dir"):
        WorkerSpec.model_validate({**raw, "context": {**raw["context"], "modle_dir": "x"}})
    with pytest.raises(ValidationError):
        WorkerSpec.model_validate({**raw, "version": 2})  # a spec from another contract
    with pytest.raises(ValidationError):
        StepContext(run_id="", model_dir=tmp_path, output_dir=tmp_path)
    with pytest.raises(ValidationError):
        StepContext(run_id="r", model_dir=tmp_path, output_dir=tmp_path, threads=0)
    with pytest.raises(ValidationError):
        ActionPolicy(gate_margn=0.1)  # type: ignore[call-arg]  # misspelled: refused
    with pytest.raises(ValidationError):
        TrainConfig(batch_size=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"w")
    result = StepResult.of({"model": tmp_path / "a"}, {"loss": 0.5})
    assert result.model_dir == tmp_path / "a"
    assert result.artifacts["model"].sha256 == content_sha256(tmp_path / "a")
    assert StepResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_the_runner_context_sorts_params_and_refuses_bad_values(tmp_path: Path) -> None:
    settings = WorkerSettings(threads=3, device="cpu")
    common = {"run_id": "r", "model": "m", "step": "fine_tune", "step_index": 1, "attempt": 2,
              "work_dir": tmp_path, "artifacts": {"model": tmp_path / "cand"},
              "snapshot": None, "champion_dir": tmp_path / "champ", "settings": settings}
    ctx = StepContext.for_step(params={"epochs": 2, "gate_margin": 0.1, "threads": 1,
                                       "log": "x"}, **common)  # type: ignore[arg-type]
    assert ctx.train.epochs == 2 and ctx.policy.gate_margin == 0.1 and ctx.threads == 1
    assert ctx.device == "cpu" and ctx.params["log"] == "x"  # a custom step's own param
    assert ctx.model_dir == tmp_path / "cand" and ctx.output_dir == tmp_path / "cache"
    assert ctx.step_dir == tmp_path / "01-fine_tune"
    with pytest.raises(BadInput, match="epochs"):
        StepContext.for_step(params={"epochs": 0}, **common)  # type: ignore[arg-type]
    bare = StepContext(run_id="r", output_dir=tmp_path, step="export_onnx")
    with pytest.raises(BadInput, match="no model to work on"):
        bare.input_model()


def test_exception_tree_says_what_the_runner_can_do() -> None:
    assert issubclass(StepError, LifeguardError) and issubclass(IntegrityError, LifeguardError)
    assert issubclass(BadInput, PermanentStepError) and issubclass(GateFailed, PermanentStepError)
    assert issubclass(ResourceExhausted, RetryableStepError)
    assert is_retryable(ResourceExhausted("oom")) and not is_retryable(BadInput("x"))
    # a sum mismatch, whichever room finds it, is permanent: only RetryableStepError retries
    assert not is_retryable(IntegrityError("bytes changed"))
    assert not is_retryable(RuntimeError("a bug"))
    assert GateFailed("lost", {"candidate": 0.5}).evidence == {"candidate": 0.5}


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


def full_disk(_: StepContext) -> StepResult:
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def bug(_: StepContext) -> StepResult:
    raise RuntimeError("shape mismatch")


def test_running_out_of_memory_or_disk_is_retryable(tmp_path: Path) -> None:
    from actions import steps

    ctx = StepContext(run_id="r", model_dir=tmp_path, output_dir=tmp_path)
    with pytest.raises(ResourceExhausted):
        steps.run_step(f"{__name__}:full_disk", ctx)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug stays a bug
        steps.run_step(f"{__name__}:bug", ctx)
    with pytest.raises(BadInput, match="unknown step"):
        steps.run_step("deploy_everywhere", ctx)
