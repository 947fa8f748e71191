"""The evaluation worker process: detector passes outside the ingest process's interpreter lock.

``WorkerProcess`` (ingest side) starts ``python -m daemon.monitor.evaluation_worker`` and talks
to it over a pipe: the model specs once, then one ``PassDelta`` per pass, answered with the
outcomes. A pass that outlives its timeout gets the worker killed; a worker that dies is
replaced on the next call (the caller sends full windows again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

from daemon.monitor.deltas import PassDelta
from daemon.monitor.detector_pass import ModelSpec, PassOutcome
from lifeguard.errors import LifeguardError

log = logging.getLogger(__name__)


class WorkerLost(LifeguardError):
    """The pass did not come back: the worker crashed, hung past its timeout, or never
    started. ``reason`` is the metric label: crash, timeout or start."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"evaluation worker {reason}: {detail}")
        self.reason = reason


class WorkerProcess:
    """One evaluation process, started on first use and replaced after it is lost.
    ``generation`` moves each time a new process starts: what the old one held is gone."""

    def __init__(self, specs: Sequence[ModelSpec], start_timeout: float,
                 name: str = "lifeguard-evaluator", nice: int = 0) -> None:
        self.specs = list(specs)
        self.start_timeout = start_timeout
        self.nice = nice
        self.name = name
        self.generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._expired = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def run(self, delta: PassDelta, timeout: float) -> list[PassOutcome]:
        """One pass; raises WorkerLost when it cannot come back."""
        conn = self.ensure()
        self._expired = False
        # A watchdog, not poll(timeout): a send into a full pipe of a stuck worker blocks too.
        timer = threading.Timer(timeout, self._expire)
        timer.daemon = True
        timer.start()
        try:
            conn.send(("pass", delta))
            kind, payload = conn.recv()
        except (EOFError, OSError) as exc:
            expired = self._expired
            self.close()
            if expired:
                raise WorkerLost("timeout", f"no answer within {timeout:.0f}s: killed") from exc
            raise WorkerLost("crash", f"the worker died ({exc!r})") from exc
        finally:
            timer.cancel()
        if kind != "done":
            self.close()
            raise WorkerLost("crash", f"unexpected answer {kind!r}")
        return list(payload)

    def _expire(self) -> None:
        self._expired = True
        self.kill()

    def ensure(self) -> Connection:
        """The running worker, started (and warmed up) when there is none. One that died
        since the last pass is reported as a crash (the caller retries on a fresh one)."""
        if self._conn is not None and self._proc is not None:
            code = self._proc.poll()
            if code is None:
                return self._conn
            self.close()
            raise WorkerLost("crash", f"the worker died between passes (exit code {code})")
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.monitor.evaluation_worker", str(theirs.fileno()),
                 str(self.nice)],
                pass_fds=[theirs.fileno()], env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                # its own process group: a terminal's Ctrl-C reaches the daemon, which stops
                # the worker in order (the worker also exits when the daemon is gone)
                process_group=0)
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        self._proc, self._conn = proc, conn
        self.generation += 1
        try:
            conn.send(self.specs)
            if not conn.poll(self.start_timeout):
                raise WorkerLost("start", f"not ready within {self.start_timeout:.0f}s")
            kind, _ = conn.recv()
            if kind != "ready":
                raise WorkerLost("start", f"unexpected greeting {kind!r}")
        except (EOFError, OSError) as exc:
            self.close()
            raise WorkerLost("start", f"the worker died while starting ({exc!r})") from exc
        except WorkerLost:
            self.close()
            raise
        log.info("evaluation worker %s started (pid %d)", self.name, proc.pid)
        return conn

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Stops the process (asking first when it is idle, killing otherwise)."""
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()  # the worker reads EOF and exits
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve(conn: Connection) -> None:
    """The worker's loop: specs, then ("pass", delta) -> ("done", outcomes) until EOF."""
    from daemon.monitor.detector_pass import build_engine, warm_up

    specs: list[ModelSpec] = conn.recv()
    engine = build_engine(specs)
    warm_up()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            kind, payload = conn.recv()
        except EOFError:
            return
        if kind == "pass":
            conn.send(("done", engine.run(payload)))


def _exit_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG fires when the spawning *thread* ends, and any daemon thread may start
    a worker: watch the parent process itself instead (its socket's EOF covers an idle
    worker; this covers one stuck in a pass)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def main(argv: Sequence[str]) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="parent-watch").start()
    # Ctrl-C reaches the whole process group: the daemon decides when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s evaluator %(levelname)s "
                        "%(name)s: %(message)s")
    if len(argv) > 1 and int(argv[1]):
        os.nice(int(argv[1]))  # background work: under contention, ingest goes first
    conn = Connection(int(argv[0]))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the daemon went away
        serve(conn)


if __name__ == "__main__":
    main(sys.argv[1:])
