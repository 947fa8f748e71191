"""Pre-flight checks of what a config points at (``lifeguard check-config --probe``): each
broker and topic, each replica, the model repository and the state store, with short timeouts.

Every probe answers ``Check`` rows and never raises: what is unreachable is a failed row that
says why, so one run lists everything that is wrong, not only the first thing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from daemon.config import DaemonConfig, StateConfig
from daemon.ingest.config import EMBEDDED, KafkaConfig

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    subject: str  # "kafka broker HOST:PORT", "replica URL", "repository PATH", ...
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK' if self.ok else 'FAIL':<4} {self.subject}: {self.detail}"


def probe_all(config: DaemonConfig, timeout_s: float = TIMEOUT_S) -> list[Check]:
    checks = probe_kafka(config.kafka, timeout_s)
    if config.fleet is not None:
        checks += [probe_replica(url, timeout_s) for url in config.fleet.replicas]
        checks.append(probe_writable_dir("repository", config.fleet.repository))
    checks += probe_state(config.state, timeout_s)
    return checks


# -- kafka ------------------------------------------------------------------------------------


def probe_kafka(kafka: KafkaConfig, timeout_s: float) -> list[Check]:
    if kafka.bootstrap_servers == EMBEDDED:
        return [Check("kafka", True, "embedded broker: the daemon starts its own")]
    answers = [_probe_broker(server, kafka, timeout_s) for server in kafka.bootstrap_servers]
    checks = [check for check, _ in answers]
    # Any broker's metadata lists the whole cluster's topics. Asking again through every
    # bootstrap server could spend the whole timeout on a dead one.
    existing = next((topics for _, topics in answers if topics is not None), None)
    if existing is None:
        return checks  # no broker answers: the topics cannot be looked up
    for topic in [*kafka.topics, kafka.dead_letter_topic]:
        if topic in existing:
            checks.append(Check(f"kafka topic {topic}", True, "exists"))
        elif kafka.create_topics:
            checks.append(Check(f"kafka topic {topic}", True,
                                "missing; the daemon creates it (create_topics: true)"))
        else:
            checks.append(Check(f"kafka topic {topic}", False,
                                "missing, and create_topics is false"))
    return checks


def _probe_broker(server: str, kafka: KafkaConfig,
                  timeout_s: float) -> tuple[Check, set[str] | None]:
    """The broker's row, and the cluster's topics when it answered."""
    subject = f"kafka broker {server}"
    try:
        topics = _with_admin([server], kafka, timeout_s, lambda admin: set(admin.list_topics()))
    except Exception as exc:  # NoBrokersAvailable, auth failures, DNS: all say why
        return Check(subject, False, _why(exc)), None
    return Check(subject, True, f"connected ({len(topics)} topics)"), topics


def _with_admin(servers: list[str], kafka: KafkaConfig, timeout_s: float,
                use: Callable[[Any], Any]) -> Any:
    from kafka import KafkaAdminClient

    ms = int(timeout_s * 1000)
    # The admin client refuses options it does not know (consumer-only ones, for instance).
    options = {k: v for k, v in kafka.client_options.items()
               if k in KafkaAdminClient.DEFAULT_CONFIG}
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id=f"{kafka.client_id}-probe",
                             request_timeout_ms=ms, bootstrap_timeout_ms=ms,
                             **options)
    try:
        return use(admin)
    finally:
        admin.close()


# -- replicas ---------------------------------------------------------------------------------


def probe_replica(url: str, timeout_s: float) -> Check:
    """Liveness (``GET /v2/health/live``), then what it serves (``POST /v2/repository/index``)."""
    import httpx

    subject = f"replica {url}"
    try:
        live = httpx.get(f"{url}/v2/health/live", timeout=timeout_s)
        if live.status_code != 200:
            return Check(subject, False, f"not live: HTTP {live.status_code}")
        index = httpx.post(f"{url}/v2/repository/index", json={}, timeout=timeout_s)
        index.raise_for_status()
        models = index.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Check(subject, False, _why(exc))
    served = [f"{m.get('name')} v{m.get('version')}" for m in models
              if isinstance(m, dict) and m.get("state") == "READY"]
    return Check(subject, True, f"live, serves {', '.join(served) or 'nothing'}")


# -- files ------------------------------------------------------------------------------------


def probe_writable_dir(what: str, path: Path) -> Check:
    """The directory exists and a file can be created in it and removed again."""
    subject = f"{what} {path}"
    if not path.is_dir():
        return Check(subject, False, "not a directory" if path.exists() else "does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=".lifeguard-probe-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return Check(subject, False, f"not writable: {exc.strerror or exc}")
    return Check(subject, True, "writable")


def probe_state(state: StateConfig, timeout_s: float = TIMEOUT_S) -> list[Check]:
    """The state store opens (a SQLite file, or a PostgreSQL server that answers) and its
    schema is one this lifeguard runs; a missing file is fine where it can be created. Nothing
    is migrated or written here."""
    from sqlalchemy.exc import SQLAlchemyError

    from lifeguard.state.engine import make_engine, sqlite_path, state_url
    from lifeguard.state.migrate import head, status

    url = state_url(state.location)
    path = sqlite_path(url)
    subject = f"state store {path or make_url(url).render_as_string(hide_password=True)}"
    artifacts = _dir_or_parent("artifacts dir", state.artifacts_dir)
    if path is not None and not path.exists():
        ok, detail = _creatable(path)
        return [Check(subject, ok, f"no file yet; {detail}"), artifacts]
    engine = make_engine(url, pooled=False, timeout_s=timeout_s)
    try:
        revision, where = status(engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return [Check(subject, False, f"cannot read: {reason}"), artifacts]
    finally:
        engine.dispose()
    check = {
        "current": Check(subject, True, f"opens, schema {revision} is current"),
        # The daemon migrates at start-up, in one transaction: behind is not broken.
        "behind": Check(subject, True, f"schema {revision or 'from before migrations'}; the "
                                       f"daemon migrates it to {head()} on start"),
        "empty": Check(subject, True, f"empty; the daemon creates schema {head()} on start"),
        "newer": Check(subject, False, f"schema {revision or '(meta)'} is newer than this "
                                       f"lifeguard ({head()}): upgrade lifeguard"),
    }[where]
    return [check, artifacts]


def _dir_or_parent(what: str, path: Path) -> Check:
    """``path`` is a writable directory, or is missing and can be created on start."""
    if path.exists():
        return probe_writable_dir(what, path)
    ok, detail = _creatable(path)
    return Check(f"{what} {path}", ok, f"missing; {detail}")


def _creatable(path: Path) -> tuple[bool, str]:
    """Whether the nearest existing parent of ``path`` is writable, so the daemon can create
    ``path`` at start-up."""
    parent = path.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    check = probe_writable_dir("", parent)
    return check.ok, (f"the daemon creates it under {parent}" if check.ok
                      else f"cannot be created under {parent}: {check.detail}")


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
