"""Settings every service reads from its environment (pydantic-settings).

`KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` point at real infrastructure; left unset,
`perlinsos up` starts the embedded broker and PostgreSQL and passes their addresses on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # Infrastructure
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None
    database_url: str | None = None
    state_dir: Path = Field(default=Path(".perlinsos"), alias="PERLINSOS_STATE_DIR")
    # registry: the file of agencies' registered public keys (perlinsos_shared.signing)
    agency_keys: Path | None = Field(default=None, alias="PERLINSOS_AGENCY_KEYS")

    # Consumer tuning: batches keep round trips off the hot path.
    consumer_max_records: int = Field(default=2000, alias="PERLINSOS_CONSUMER_MAX_RECORDS")
    # How long one poll waits when nothing is there (records return as soon as they come,
    # so this adds no latency): each empty poll wakes the service, and at 20 ms those
    # wake-ups were a quarter of every service's CPU at rest (paid at any rate).
    consumer_batch_timeout_ms: int = Field(default=250, alias="PERLINSOS_CONSUMER_BATCH_TIMEOUT_MS")
    # The longest a fetch request waits at the broker for records (Kafka's
    # fetch.max.wait.ms); a broker that does not answer early when records arrive holds
    # each fetch this long, so it bounds the wait per hop.
    consumer_fetch_max_wait_ms: int = Field(
        default=100, alias="PERLINSOS_CONSUMER_FETCH_MAX_WAIT_MS"
    )
    # The most a fetch returns of one partition (Kafka's max.partition.fetch.bytes, 1 MiB
    # by default): on a topic of one partition (the embedded stack) 1 MiB is about 700
    # intake events, so a burst's batches were half `consumer_max_records`; 4 MiB holds a
    # full batch. A fetch as a whole stays under Kafka's fetch.max.bytes (50 MiB).
    consumer_max_partition_fetch_bytes: int = Field(
        default=4 * 1024 * 1024, alias="PERLINSOS_CONSUMER_MAX_PARTITION_FETCH_BYTES"
    )
    # A short session timeout makes a group join (and recovery from a killed instance) fast.
    consumer_session_timeout_ms: int = Field(
        default=6000, alias="PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS"
    )
    outbox_batch_size: int = Field(default=5000, alias="PERLINSOS_OUTBOX_BATCH_SIZE")
    handler_max_attempts: int = Field(default=3, alias="PERLINSOS_HANDLER_MAX_ATTEMPTS")
    # Connections per service instance, opened as needed: the relay keeps one (its lock)
    # and notify's sender another (its liveness), the rest serve the consumers' batches,
    # the sender's claims and records and the other loops without queueing for one.
    db_pool_size: int = Field(default=8, alias="PERLINSOS_DB_POOL_SIZE")
    # Kafka's idempotent producer (no duplicates from producer retries, order kept with
    # several requests in flight). On by default; `perlinsos up` turns it off for the
    # embedded broker, which does not implement it.
    kafka_idempotent: bool = Field(default=True, alias="PERLINSOS_KAFKA_IDEMPOTENT")

    # Supervision and health (README, operations): a failed background loop waits
    # initial * 2^n seconds (jittered, capped at max) and starts again; it counts as
    # recovered after running `healthy_after` seconds without failing.
    loop_backoff_initial_s: float = Field(default=0.5, alias="PERLINSOS_LOOP_BACKOFF_INITIAL_S")
    loop_backoff_max_s: float = Field(default=30.0, alias="PERLINSOS_LOOP_BACKOFF_MAX_S")
    loop_healthy_after_s: float = Field(default=10.0, alias="PERLINSOS_LOOP_HEALTHY_AFTER_S")
    # A batch whose database work fails for a transient reason is retried with backoff up
    # to this many seconds between attempts, for as long as it takes (never dead-lettered).
    consumer_retry_backoff_max_s: float = Field(
        default=10.0, alias="PERLINSOS_CONSUMER_RETRY_BACKOFF_MAX_S"
    )
    # /readyz fails when a consumer has not polled the broker for this long (stuck in a
    # batch, e.g. waiting for the database); /livez fails when the event loop has not
    # ticked for this long (the process is wedged and should be restarted).
    consumer_stall_s: float = Field(default=60.0, alias="PERLINSOS_CONSUMER_STALL_S")
    liveness_stall_s: float = Field(default=30.0, alias="PERLINSOS_LIVENESS_STALL_S")
    # /livez also fails when start-up (database, migrations, producer, consumer group
    # joins) has not finished within this long, so a start that hangs is restarted.
    startup_deadline_s: float = Field(default=180.0, alias="PERLINSOS_STARTUP_DEADLINE_S")

    # SMS (notify)
    sms_provider: Literal["file", "twilio"] = "file"
    sms_sender_id: str = "PERLINSOS"
    sms_help_line: str = "0778-123456"
    sms_rate_limit_per_s: float = 0.0  # 0 = no limit
    # Retryable provider failures (429, 5xx, no connection) are retried with capped backoff
    # for this long from the first try; then the message is `failed` (24 hours).
    sms_retry_horizon_s: float = 86400.0
    # An ambiguous send the provider's message list can neither confirm nor deny for this
    # long is surfaced (metric, `perlinsos notify failures`) for an operator (15 minutes).
    sms_unconfirmed_alert_s: float = 900.0
    sms_timeout_s: float = 10.0
    twilio_api_base: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    sms_brand: str = "Perlinsos Batam"  # the programme's name in every message text
    sms_batch_size: int = 500  # messages claimed per sender round
    sms_concurrency: int = 32  # provider requests in flight per notify instance
    sms_backoff_base_s: float = 1.0  # first retry delay; doubles per attempt, with jitter
    sms_backoff_max_s: float = 300.0
    # A message handed to the provider and not recorded this long after is reconciled by
    # any instance (the lease counts from the hand-over; a queued claim never expires
    # while its instance lives).
    sms_claim_lease_s: float = 60.0

    # Retention: published outbox rows (with the personal data they carry) and inbox ids
    # older than this are deleted; it is also how far back `perlinsos outbox replay` reaches.
    retention_days: float = Field(default=30.0, alias="PERLINSOS_RETENTION_DAYS")

    # Telemetry: the standard OTEL_* variables are read by the OpenTelemetry SDK itself;
    # these two are read here to decide where spans go.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str | None = None
    metrics_port: int | None = Field(default=None, alias="PERLINSOS_METRICS_PORT")

    # Keyed pseudonyms of NIKs (HMAC-SHA-256): the key, shared by every service and the
    # operator CLI. Unset, a key is created once in <state dir>/pseudonym.key and kept.
    # Earlier keys, comma-separated, keep rows hashed before a rotation findable.
    pseudonym_secret: SecretStr | None = Field(default=None, alias="PERLINSOS_PSEUDONYM_SECRET")
    pseudonym_previous_secrets: SecretStr | None = Field(
        default=None, alias="PERLINSOS_PSEUDONYM_PREVIOUS_SECRETS"
    )

    @property
    def sms_file(self) -> Path:
        return self.state_dir / "sms" / "outbox.jsonl"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


STACK_FILE = "stack.json"


def write_stack_file(
    settings: Settings,
    bootstrap: str,
    database_url: str,
    service_database_urls: dict[str, str] | None = None,
) -> None:
    """Written by `perlinsos up` so operator commands in another shell find the stack.

    `database_url` is the operators' read-only login; `service_database_urls` are the
    services' own logins, for the few commands that change a service's state.
    """
    import json
    import os

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / STACK_FILE
    # the database URL may carry a password: readable by the owner only
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {
                "kafka_bootstrap_servers": bootstrap,
                "database_url": database_url,
                "service_database_urls": service_database_urls or {},
                "kafka_idempotent": settings.kafka_idempotent,
            },
            f,
        )


def remove_stack_file(settings: Settings) -> None:
    (settings.state_dir / STACK_FILE).unlink(missing_ok=True)


def resolved_settings() -> Settings:
    """Settings from the environment, completed from a running `perlinsos up` if needed."""
    import json

    settings = get_settings()
    if settings.kafka_bootstrap_servers and settings.database_url:
        return settings
    path = settings.state_dir / STACK_FILE
    if not path.exists():
        return settings
    found = json.loads(path.read_text())
    update = {
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers
        or found["kafka_bootstrap_servers"],
        "database_url": settings.database_url or found["database_url"],
    }
    if "kafka_idempotent" not in settings.model_fields_set and "kafka_idempotent" in found:
        update["kafka_idempotent"] = bool(found["kafka_idempotent"])  # the stack's broker
    return settings.model_copy(update=update)


def writer_settings(service: str, settings: Settings | None = None) -> Settings:
    """Settings for an operator command that changes `service`'s state: its own login
    from a running `perlinsos up` (other commands read through the read-only login)."""
    import json

    settings = settings or resolved_settings()
    path = settings.state_dir / STACK_FILE
    if get_settings().database_url or not path.exists():
        return settings
    url = json.loads(path.read_text()).get("service_database_urls", {}).get(service)
    return settings.model_copy(update={"database_url": url}) if url else settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings explicitly set, as the environment variables that set them."""
    out: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        if name not in settings.model_fields_set:
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        out[(field.alias or name).upper()] = text
    return out
