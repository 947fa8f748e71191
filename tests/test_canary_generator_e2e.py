"""A bad generative canary rolled back by the daemon's own judge, on real processes: broker, two
replicas serving the support bot, the daemon, the chat simulator's steady traffic with its late
feedback. A candidate that answers another domain's text is rolled out as a canary; the deploy
step asks the daemon's ``/canary/{model}`` (its windows, by version) over HTTP, which finds the
canary's reference score and ratings below the stable version's, and the fleet goes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from deploy.config import FleetConfig
from deploy.remote_judge import RemoteJudge
from deploy.rollout_store import RolloutStore
from deploy.step import DeployRequest, deploy
from harness.base_model import BaseModel
from harness.processes import TOKEN, TOPIC, Stack
from harness.replicas import served_versions
from harness.support_demo import MODEL, support_scenario, support_settings
from harness.tiny_models import cached_onnx_causal_lm
from simulator.chat import ChatDriverConfig, ChatSimulator

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> BaseModel:
    from harness.support_model import prepare_support_model

    return prepare_support_model(tmp_path_factory.mktemp("support-cache"), tiny=True)


def test_a_bad_generative_canary_is_rolled_back_by_the_daemons_judge(
        base: BaseModel, tmp_path: Path) -> None:
    # approve: whatever the daemon's detectors make of the canary, no run of its own deploys
    settings = support_settings("approve", tiny=True)
    with Stack(tmp_path / "stack", settings) as stack:
        stack.start(base.checkpoint, base.deployable)
        assert stack.broker is not None
        fleet = yaml.safe_load((stack.root / "lifeguard.yaml").read_text())["fleet"]
        fleet["rollout"]["canary"].update(timeout_s=240.0, poll_interval_s=1.0)
        config = FleetConfig.model_validate(fleet)
        stable = served_versions(stack.replica_urls, MODEL)
        assert set(stable.values()) == {1}

        scenario = support_scenario(4.0, 0.0, 600.0, stationary=True)
        driver = ChatDriverConfig(urls=stack.replica_urls, kafka=stack.broker.bootstrap,
                                  topic=TOPIC, endpoint="chat", concurrency=4)
        simulator = ChatSimulator(scenario, driver).start()
        try:
            time.sleep(30)  # the stable version's answers and their feedback reach the daemon
            judge = RemoteJudge(stack.daemon_url, TOKEN)  # the deploy step's judge
            # another domain's LM: same task and cache layout, answers unrelated to support
            request = DeployRequest(MODEL, cached_onnx_causal_lm(), run_id="bad-canary")
            try:
                result = deploy(request, config, tmp_path / "rollouts.db", judge=judge)
            finally:
                judge.close()
        finally:
            simulator.stop()
        assert simulator.error is None, simulator.error
        after = served_versions(stack.replica_urls, MODEL)

    assert result.outcome == "rolled_back", result
    assert result.version == 2
    reason = result.reason or ""
    assert "reference score" in reason or "rating" in reason, reason
    assert after == stable  # every replica serves the stable version again
    events = RolloutStore(tmp_path / "rollouts.db").events(result.rollout_id)
    judged = [e.detail for e in events if e.kind == "verdict"]
    assert judged and judged[-1].get("verdict") == "unhealthy", [e.kind for e in events]
    # judged from the daemon's windows: the canary's answers scored against the references
    # the simulator sent, next to the stable version's over the same time
    evidence = judged[-1]["evidence"]
    assert evidence["stable_events"] and evidence["canary_events"], evidence
    canary_quality = [evidence[f"canary_{k}"] for k in ("reference_score", "rating")]
    stable_quality = [evidence[f"stable_{k}"] for k in ("reference_score", "rating")]
    assert any(c is not None and s is not None and c < s
               for c, s in zip(canary_quality, stable_quality, strict=True)), evidence
