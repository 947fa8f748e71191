"""Ctrl-C and SIGTERM on real processes: ``lifeguard demo`` (broker, replicas, daemon, the
simulator's traffic flowing) and ``lifeguard run`` alone each stop within 5 s of the signal
sent to their process group, exit 0 or 130, print no traceback and leave no process behind.
Before the demo is stopped, ``lifeguard check-config --probe`` runs against its config with
one replica stopped, and names that replica."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from procs import metric_sum, wait_until

from daemon.ingest.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

STOP_WITHIN_S = 5.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}


def _spawn(args: list[str], tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """A ``lifeguard`` command as a terminal would run it: the leader of its own group."""
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], env=_env(),
                            stdout=open(out, "wb"), stderr=open(err, "wb"),  # noqa: SIM115
                            stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, out, err


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal_and_time(proc: subprocess.Popen[bytes], sig: int) -> float:
    started = time.monotonic()
    os.killpg(proc.pid, sig)  # what the terminal does on Ctrl-C: the whole foreground group
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return time.monotonic() - started


def _assert_clean(proc: subprocess.Popen[bytes], took_s: float, err: Path,
                  pids: list[int]) -> None:
    stderr = err.read_text(errors="replace")
    assert took_s < STOP_WITHIN_S, (took_s, stderr[-2000:])
    assert proc.returncode in (0, 130), (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work dir for both demo runs: the tiny base model is built once and cached."""
    return tmp_path_factory.mktemp("demo")


@pytest.fixture
def demo(demo_dir: Path, request: pytest.FixtureRequest
         ) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], Path, list[int]]]]:
    """Starts the demo; whatever the test's outcome, nothing of it outlives the test."""
    started: list[tuple[subprocess.Popen[bytes], list[int]]] = []

    def start() -> tuple[subprocess.Popen[bytes], Path, list[int]]:
        proc, err, pids = _start_demo(demo_dir, request.node.name[:40], started)
        return proc, err, pids

    yield start
    for proc, pids in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _start_demo(workdir: Path, name: str,
                started_list: list[tuple[subprocess.Popen[bytes], list[int]]]
                ) -> tuple[subprocess.Popen[bytes], Path, list[int]]:
    proc, out, err = _spawn(["demo", "--tiny", "--workdir", str(workdir), "--rate", "10",
                             "--shift-at", "600"], workdir, name)
    started_list.append((proc, []))

    def started() -> re.Match[str] | None:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited {proc.returncode}: {err.read_text()[-3000:]}")
        return re.search(r"daemon: (\S+).*?stack pids: ([\d ]+)", out.read_text(), re.S)

    match = wait_until(started, 180, 0.5, "the demo stack")
    url, pids = match.group(1), [int(p) for p in match.group(2).split()]
    started_list[-1] = (proc, pids)
    # The simulator's traffic reaches the daemon: the producer and the broker are in use.
    wait_until(lambda: metric_sum(httpx.get(f"{url}/metrics", timeout=5).text,
                                  "lifeguard_events_total") > 0, 60, 0.5, "events")
    return proc, err, pids


def test_ctrl_c_stops_the_demo_stack_cleanly(demo) -> None:  # type: ignore[no-untyped-def]
    proc, err, pids = demo()
    took = _signal_and_time(proc, signal.SIGINT)
    _assert_clean(proc, took, err, pids)
    assert proc.returncode == 130


def test_sigterm_stops_the_demo_stack_and_probe_names_a_stopped_replica(
        demo, demo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    proc, err, pids = demo()
    config = demo_dir / "run" / "lifeguard.yaml"
    replicas = yaml.safe_load(config.read_text())["fleet"]["replicas"]
    probe = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", "--probe",
                            str(config)], env=_env(), capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.count("OK") >= 5, probe.stdout
    stopped = replicas[1]
    port = int(stopped.rsplit(":", 1)[1])
    replica_pid = next(pid for pid in pids
                       if f"--port {port} " in Path(f"/proc/{pid}/cmdline").read_text()
                       .replace("\0", " "))
    os.kill(replica_pid, signal.SIGTERM)
    wait_until(lambda: not _alive(replica_pid), 10, 0.1, "the replica to stop")
    probe = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", "--probe",
                            str(config)], env=_env(), capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode != 0, probe.stdout
    failed = [line for line in probe.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and stopped in failed[0], probe.stdout
    assert replicas[0] in probe.stdout and f"OK   replica {replicas[0]}" in probe.stdout

    took = _signal_and_time(proc, signal.SIGTERM)
    _assert_clean(proc, took, err, pids)
    assert proc.returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_lifeguard_run_alone_stops_cleanly(tmp_path: Path, sig: int) -> None:
    port = free_port()
    config = tmp_path / "lifeguard.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": "embedded", "topics": ["inference"]},
        "api": {"port": port},
        "state": {"path": str(tmp_path / "state.db"), "artifacts_dir": str(tmp_path / "a")},
        "models": [{"name": "m"}]}))
    proc, _, err = _spawn(["run", "-c", str(config)], tmp_path, "run")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {err.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, 0.2, "the daemon")
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                .read_text().split()]
    assert children, "the embedded broker runs as a child"
    took = _signal_and_time(proc, sig)
    _assert_clean(proc, took, err, [proc.pid, *children])
    assert "lifeguard stopped" in err.read_text()
