"""Where events come from: the Kafka part of lifeguard's config."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from lifeguard.config import StrictModel

EMBEDDED: Final = "embedded"


class KafkaConfig(StrictModel):
    """Where inference and feedback events come from."""

    bootstrap_servers: list[str] | Literal["embedded"] = Field(
        EMBEDDED, description="Kafka brokers, or 'embedded' to start a local broker."
    )
    topics: list[str] = Field(["inference"], min_length=1)
    group_id: str = "lifeguard"
    client_id: str = "lifeguard"
    dead_letter_topic: str = "lifeguard.dead-letter"
    max_message_bytes: int = Field(1 << 20, gt=0, description="Larger messages are dead-lettered.")
    max_batch: int = Field(2000, gt=0, description="Most records applied per poll.")
    poll_timeout_ms: int = Field(100, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    replay_messages: int | None = Field(
        None, ge=0,
        description="On partition assignment, re-read up to this many already-committed messages "
        "per partition to rebuild windows and references (counted as replayed, never acted "
        "on). Default: the models' window sizes plus reference sizes; 0 turns replay off.",
    )
    partitions: int = Field(3, gt=0, description="Partitions for topics the daemon creates.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to kafka-python as-is: security_protocol, sasl_*, ssl_*, ...",
    )
