"""Session-wide inputs for the action tests: tiny models (built once), labelled snapshots with a
domain shift to learn, and the fine-tune/export results several tests start from."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.contract import StepContext, StepResult
from actions.settings import ActionPolicy, TrainConfig
from actions.snapshot import write_snapshot
from harness.tiny_models import cached_causal_lm, cached_classifier, review_corpus

TRAIN = TrainConfig(epochs=3, batch_size=16, learning_rate=2e-3, max_length=32,
                    checkpoint_every=10)


def labelled_rows(domain: str, n: int, seed: int, prefix: str) -> list[dict[str, object]]:
    # a unique id word in each text lets tests see which rows a model trained on
    return [{"request_id": f"{prefix}{i}", "text": f"{text} id{prefix}{i}", "label": label,
             "ts": 1_764_000_000_000 + i}
            for i, (text, label) in enumerate(review_corpus(n, domain, seed))]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("actions")


@pytest.fixture(scope="session")
def champion_dir() -> Path:
    """A classifier that knows electronics reviews; production has moved to restaurants."""
    return cached_classifier("electronics")


@pytest.fixture(scope="session")
def drift_snapshot(workspace: Path) -> Path:
    rows = labelled_rows("restaurants", 400, 3, "r")
    rows.append({"request_id": "odd", "text": "what", "label": "neutral"})  # unknown label
    return write_snapshot(workspace / "snapshot.jsonl", rows)


@pytest.fixture(scope="session")
def reference_snapshot(workspace: Path) -> Path:
    return write_snapshot(workspace / "reference.jsonl", labelled_rows("electronics", 200, 9, "e"))


@pytest.fixture(scope="session")
def clf_ctx(workspace: Path, champion_dir: Path, drift_snapshot: Path,
            reference_snapshot: Path) -> StepContext:
    return StepContext(
        run_id="run-clf", model_dir=champion_dir, output_dir=workspace / "out",
        snapshot=drift_snapshot, reference=reference_snapshot, champion_dir=champion_dir,
        device="cpu", threads=2, train=TRAIN, policy=ActionPolicy(replay_fraction=0.2),
    )


@pytest.fixture(scope="session")
def tuned(clf_ctx: StepContext) -> StepResult:
    from actions.steps import run_step

    return run_step("fine_tune", clf_ctx)


@pytest.fixture(scope="session")
def exported(clf_ctx: StepContext, tuned: StepResult) -> StepResult:
    from actions.steps import run_step

    return run_step("export_onnx", clf_ctx.with_model(tuned.model_dir))


# --- generators ---

def prompt_rows(domain: str, n: int, seed: int, prefix: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i, (text, _) in enumerate(review_corpus(n, domain, seed)):
        words = text.split()
        rows.append({"request_id": f"{prefix}{i}", "text": " ".join(words[:2]),
                     "reference": " " + " ".join(words[2:])})
    return rows


@pytest.fixture(scope="session")
def lm_dir() -> Path:
    return cached_causal_lm("electronics")


@pytest.fixture(scope="session")
def lm_ctx(workspace: Path, lm_dir: Path) -> StepContext:
    snapshot = write_snapshot(workspace / "lm-snapshot.jsonl",
                              prompt_rows("restaurants", 300, 5, "g"))
    return StepContext(
        run_id="run-lm", model_dir=lm_dir, output_dir=workspace / "lm-out", snapshot=snapshot,
        champion_dir=lm_dir, device="cpu", threads=2,
        # LoRA (the default for a causal LM) learns at a higher rate than full fine-tuning
        train=TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, max_length=48),
        policy=ActionPolicy(gate_new_tokens=8),
    )
