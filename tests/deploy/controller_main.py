"""The daemon side of a deploy, as its own process, so a test can SIGKILL it mid-rollout and
start it again: ``python -m tests.deploy.controller_main SPEC.json`` prints the result."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from deploy.config import FleetConfig
from deploy.judge import KafkaTrafficJudge
from deploy.step import DeployRequest, deploy


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    fleet = FleetConfig.model_validate(spec["fleet"])
    judge = KafkaTrafficJudge(spec["kafka"], spec["topic"], spec["model"], fleet.rollout.canary)
    request = DeployRequest(model=spec["model"], source_dir=Path(spec["source_dir"]),
                            run_id=spec["run_id"], trigger="test")
    result = deploy(request, fleet, Path(spec["state_path"]), judge)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
