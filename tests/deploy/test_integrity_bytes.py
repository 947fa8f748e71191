"""Integrity is checked on the bytes that load: the replica's loader reads a version's files
once, checks their sums on those bytes and builds the session and tokenizer from them, so a
file swapped on disk after the check is never what serves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import deploy.onnx_session as onnx_session
from deploy.inference import OnnxClassifier, load_onnx
from deploy.repository import ModelRepository
from deploy.serving import ModelServer
from harness.replicas import MODEL
from harness.tiny_models import cached_onnx_classifier
from lifeguard.errors import IntegrityError

TEXTS = ["great battery, works well", "broke after a day, refund", "fine"]


@pytest.mark.integration
def test_a_file_swapped_after_the_check_is_never_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = cached_onnx_classifier("fp32")
    expected = OnnxClassifier.from_dir(source, "cpu", 1).predict(TEXTS)
    repo = ModelRepository(tmp_path / "repo")
    repo.publish(MODEL, source, run_id="v1")
    version_dir = repo.version_dir(MODEL, 1)
    real_create = onnx_session.create_session
    seen: list[type] = []

    def swap_then_create(model: Any, *args: Any) -> Any:
        # The attacker's moment: after the sums were checked, before anything is built.
        for path in version_dir.iterdir():
            if path.name != "version.json":
                path.write_bytes(b"swapped")
        seen.append(type(model))
        return real_create(model, *args)

    monkeypatch.setattr(onnx_session, "create_session", swap_then_create)
    server = ModelServer(repo, "cpu", threads=1)

    async def load_and_predict() -> list[tuple[str | None, float | None]]:
        await server.load(MODEL, 1)
        answers = [await server.predict(MODEL, text) for text in TEXTS]
        await server.close()
        return [(a.label, a.score) for a in answers]

    served = asyncio.run(load_and_predict())
    assert seen == [bytes]  # ORT was handed the verified bytes, not a path to reopen
    assert [label for label, _ in served] == [label for label, _ in expected]
    assert [s for _, s in served] == pytest.approx([p for _, p in expected], abs=1e-6)
    # The swapped files are on disk; a later load sees them and refuses.
    monkeypatch.setattr(onnx_session, "create_session", real_create)
    with pytest.raises(IntegrityError, match="sha256"):
        repo.read_verified(MODEL, 1)


def test_an_exported_directory_is_checked_on_the_bytes_it_loads(tmp_path: Path) -> None:
    import json
    import shutil

    from deploy.integrity import digest_dir

    model_dir = tmp_path / "model"
    shutil.copytree(cached_onnx_classifier("fp32"), model_dir)
    (model_dir / "artifact.json").unlink(missing_ok=True)
    (model_dir / "artifact.json").write_text(json.dumps({"files": digest_dir(model_dir)}))
    assert load_onnx(model_dir, "cpu", 1).predict(TEXTS[:1])[0][0] in ("negative", "positive")
    (model_dir / "tokenizer.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"tokenizer\.json"):
        load_onnx(model_dir, "cpu", 1)
