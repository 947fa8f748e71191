"""ops/ Kubernetes manifests and systemd unit: the config they carry validates, and every name,
port, path and label that ties them to each other and to the daemon agrees."""

from __future__ import annotations

import configparser
import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from daemon.cli import app
from daemon.config import DaemonConfig, load_config, parse_config
from daemon.http import create_app

OPS = Path(__file__).resolve().parent.parent / "ops"
K8S = OPS / "kubernetes"
UNIT = OPS / "systemd" / "lifeguard.service"
CONFIG = OPS / "config" / "lifeguard.yaml"


def _manifests() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs[doc["kind"]] = doc
    return docs


def _container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return container


def _cli_params(argv: list[str]) -> dict[str, Any]:
    """Parse a `lifeguard ...` command line with the real CLI's parser, without running it."""
    group: Any = typer.main.get_command(app)  # typer may bring its own click: duck-typed
    command = group.commands[argv[0]]
    return command.make_context(argv[0], list(argv[1:])).params


def test_the_configmap_carries_the_ops_config_and_it_validates() -> None:
    data = _manifests()["ConfigMap"]["data"]
    assert data == {"lifeguard.yaml": CONFIG.read_text()}
    config = parse_config(yaml.safe_load(data["lifeguard.yaml"]), "configmap")
    assert config.api.host == "0.0.0.0"  # probes and Prometheus come from outside the pod
    assert config.kafka.bootstrap_servers != "embedded"


def test_the_cli_accepts_the_config(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok (1 model(s): sentiment)" in done.stdout


def test_statefulset_runs_the_configmap_with_its_state_on_the_volume() -> None:
    docs = _manifests()
    config = load_config(CONFIG)
    sts = docs["StatefulSet"]
    spec = sts["spec"]
    assert spec["replicas"] == 1  # SQLite: one writer per volume
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = _container(docs)
    argv = [*container["command"][1:], *container["args"]]
    assert container["command"][0] == "lifeguard"
    params = _cli_params(argv)
    assert argv[0] == "run"
    mounts = {m["name"]: PurePosixPath(m["mountPath"]) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    # --config points into the ConfigMap's mount, at the key that holds the config.
    config_path = PurePosixPath(str(params["config"]))
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert config_path.parent == mounts[config_volume]
    assert config_path.name in docs["ConfigMap"]["data"]
    # The state and the artifacts live on the claim, not in the container's filesystem.
    (claim,) = spec["volumeClaimTemplates"]
    state_mount = mounts[claim["metadata"]["name"]]
    assert PurePosixPath(config.state.path).is_relative_to(state_mount)
    assert PurePosixPath(config.state.artifacts_dir).is_relative_to(state_mount)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The model repository is shared with the fleet: its own ReadWriteMany claim.
    assert config.fleet is not None
    (repo_volume,) = [n for n, p in mounts.items()
                      if PurePosixPath(config.fleet.repository).is_relative_to(p)
                      and n != claim["metadata"]["name"]]
    pvc = volumes[repo_volume]["persistentVolumeClaim"]["claimName"]
    assert pvc == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # A read-only root filesystem needs a writable /tmp.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[next(n for n, p in mounts.items() if str(p) == "/tmp")]


def test_the_token_comes_from_the_secret_into_the_env_var_the_config_reads() -> None:
    docs = _manifests()
    config = load_config(CONFIG)
    secret = docs["Secret"]
    env = {e["name"]: e for e in _container(docs)["env"]}
    ref = env[config.api.token_env]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert config.api.token is None  # never in the ConfigMap
    # The committed placeholder is empty: a daemon deployed as-is refuses every mutation.
    assert secret["stringData"][ref["key"]] == ""


def test_ports_and_probes_agree_with_the_daemon() -> None:
    docs = _manifests()
    config = load_config(CONFIG)
    container = _container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.api.port
    service = docs["Service"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports and port["port"] == config.api.port
    pod_labels = docs["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # Each probe hits a path the daemon's HTTP app serves (200 or 503, never 404).
    client = TestClient(create_app(CollectorRegistry(), lambda: (True, "ok"),
                                   lambda: (False, "waiting")))
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["port"] in ports, kind
        assert client.get(probe["path"]).status_code in (200, 503), kind
    assert client.get(container["readinessProbe"]["httpGet"]["path"]).status_code == 503
    assert client.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200


def test_servicemonitor_scrapes_the_service_as_job_lifeguard() -> None:
    docs = _manifests()
    monitor, service = docs["ServiceMonitor"], docs["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    # The alert rules select job="lifeguard".
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "lifeguard"


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    docs = _manifests()
    assert set(docs) == {"Namespace", "ConfigMap", "Secret", "StatefulSet", "Service",
                         "ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim"}
    namespace = docs["Namespace"]["metadata"]["name"]
    assert kustomization["namespace"] == namespace
    for kind, doc in docs.items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, kind


def test_the_prometheusrule_is_the_rule_files_regenerated() -> None:
    spec = importlib.util.spec_from_file_location("ops_prometheusrule", K8S / "prometheusrule.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (K8S / "prometheusrule.yaml").read_text() == module.render()
    groups = [g for path in sorted((OPS / "prometheus" / "rules").glob("*.yml"))
              for g in yaml.safe_load(path.read_text())["groups"]]
    assert _manifests()["PrometheusRule"]["spec"]["groups"] == groups


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_runs_the_daemon_with_its_state_directory() -> None:
    unit = _unit()
    service = unit["Service"]
    start = shlex.split(service["ExecStart"])
    assert Path(start[0]).name == "lifeguard"
    params = _cli_params(start[1:])
    assert start[1] == "run"
    pre = shlex.split(service["ExecStartPre"])
    assert pre[1] == "check-config" and pre[2] == str(params["config"])
    # StateDirectory=lifeguard is /var/lib/lifeguard: where the ops config keeps its state.
    config: DaemonConfig = load_config(CONFIG)
    state_dir = PurePosixPath("/var/lib") / service["StateDirectory"]
    assert PurePosixPath(config.state.path).is_relative_to(state_dir)
    assert PurePosixPath(config.state.artifacts_dir).is_relative_to(state_dir)
    assert service["KillSignal"] == "SIGTERM"  # the daemon's clean shutdown
    assert int(service["TimeoutStopSec"]) >= 30
    assert service["EnvironmentFile"]  # LIFEGUARD_TOKEN, never in the unit
    assert service["User"] != "root"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's binary exists: point it at this checkout's console script.
    lifeguard = Path(sys.executable).with_name("lifeguard")
    assert lifeguard.exists()
    unit = tmp_path / "lifeguard.service"
    unit.write_text(UNIT.read_text().replace("/opt/lifeguard/bin/lifeguard", str(lifeguard)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lifeguard.service" not in done.stderr  # no warning about our unit at all


def test_the_scale_out_overlay_shares_postgresql_and_the_run_directories() -> None:
    scale = OPS / "kubernetes-scale-out"
    docs = {doc["kind"]: doc for path in sorted(scale.glob("*.yaml"))
            if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None}
    kustomization = yaml.safe_load((scale / "kustomization.yaml").read_text())
    listed = {*kustomization["resources"], *(p["path"] for p in kustomization["patches"])}
    assert listed == {"../kubernetes", *(p.name for p in scale.glob("*.yaml"))} - {
        "kustomization.yaml"}
    base, base_docs = load_config(CONFIG), _manifests()
    config = parse_config(yaml.safe_load(docs["ConfigMap"]["data"]["lifeguard.yaml"]), "overlay")
    assert config.state.url is not None and config.state.url.startswith("postgresql://")
    assert ":" not in config.state.url.split("@")[0].removeprefix("postgresql://"), \
        "the password comes from PGPASSWORD, not the config"
    # Only where the state lives differs from the base config.
    assert (config.model_dump(exclude={"state", "runner"})
            == base.model_dump(exclude={"state", "runner"}))
    assert config.runner.max_concurrent_runs == base.runner.max_concurrent_runs
    # The patches name what the base defines.
    sts = docs["StatefulSet"]
    assert sts["metadata"]["name"] == base_docs["StatefulSet"]["metadata"]["name"]
    assert docs["ConfigMap"]["metadata"]["name"] == base_docs["ConfigMap"]["metadata"]["name"]
    assert sts["spec"]["replicas"] > 1
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["name"] == _container(base_docs)["name"]
    env = {e["name"]: e for e in container["env"]}
    secret = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == docs["Secret"]["metadata"]["name"]
    assert secret["key"] in docs["Secret"]["stringData"]
    # Runs and artifacts on the ReadWriteMany claim: a run taken over finds its steps' outputs.
    (mount,) = container["volumeMounts"]
    (volume,) = sts["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    claim = docs["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    shared = PurePosixPath(mount["mountPath"])
    assert config.runner.work_dir is not None
    assert PurePosixPath(config.runner.work_dir).is_relative_to(shared)
    assert PurePosixPath(config.state.artifacts_dir).is_relative_to(shared)


def test_kustomize_builds_the_scale_out_overlay_onto_the_base() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    built = subprocess.run([kubectl, "kustomize", str(OPS / "kubernetes-scale-out")],
                           capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built.stdout)}
    sts = docs[("StatefulSet", "lifeguard")]
    assert sts["spec"]["replicas"] == 3
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"] for e in container["env"]}
    assert {"LIFEGUARD_TOKEN", "PGPASSWORD"} <= env, "the patch adds to the base, not replaces"
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in sts["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"lifeguard-shared", "lifeguard-model-repository"}
    config = parse_config(yaml.safe_load(docs[("ConfigMap", "lifeguard-config")]["data"]
                                         ["lifeguard.yaml"]), "built")
    assert config.state.url is not None and config.state.url.startswith("postgresql://")
