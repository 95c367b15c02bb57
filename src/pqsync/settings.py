"""Configuration from the environment (and `.env`), exactly as DESIGN.md's table."""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The key the bundled simulator accepts unless it is started with another one.
SIMULATOR_API_KEY = "pqsync-simulator-key"
DEV_SECRET = "dev-insecure-change-me"  # noqa: S105 - refused in production below

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
MIN_SECRET_LENGTH = 32
# Values that are public (this repository, its README, its tests): never a production secret.
DEV_SECRETS = frozenset({DEV_SECRET, "changeme", "change-me", "secret", "dev", "test"})

# A production secret must look random: an estimate of its entropy (below) of at least this
# many bits, from at least this many different characters. `secrets.token_urlsafe(32)` has
# about 190 bits by this estimate, `secrets.token_hex(16)` at least 90.
MIN_SECRET_BITS = 80
MIN_SECRET_CHARACTERS = 8
MAKE_ONE_WITH = 'e.g. python3 -c "import secrets; print(secrets.token_urlsafe(32))"'

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(spec: str) -> Networks:
    """Addresses or networks (CIDR) separated by commas or spaces."""
    parts = spec.replace(",", " ").split()
    return tuple(ipaddress.ip_network(part, strict=False) for part in parts)


def estimated_entropy_bits(value: str) -> float:
    """A conservative guess at a secret's entropy: the Shannon entropy of its characters
    times its length, counted over its shortest repeating unit only ("password" four times
    is as guessable as "password" once)."""
    unit = value
    for length in range(1, len(value) // 2 + 1):
        if len(value) % length == 0 and value[:length] * (len(value) // length) == value:
            unit = value[:length]
            break
    counts = Counter(unit)
    size = len(unit)
    per_character = -sum(n / size * math.log2(n / size) for n in counts.values())
    return per_character * size


def secret_is_predictable(value: str) -> bool:
    return (
        len(set(value)) < MIN_SECRET_CHARACTERS or estimated_entropy_bits(value) < MIN_SECRET_BITS
    )


class SettingsError(ValueError):
    """The configuration cannot be used; the message says which variable and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    env: Literal["development", "test", "production"] = Field(
        "development", validation_alias="PQSYNC_ENV"
    )
    database_url: str = Field("sqlite:///var/pqsync.db", validation_alias="PQSYNC_DATABASE_URL")
    queue_url: str = Field("sqlite:///var/queue.db", validation_alias="PQSYNC_QUEUE_URL")
    intakeq_base_url: str = Field("https://intakeq.com/api/v1", validation_alias="INTAKEQ_BASE_URL")
    intakeq_api_key: SecretStr | None = Field(None, validation_alias="INTAKEQ_API_KEY")
    intakeq_minute_limit: int = Field(10, ge=1, validation_alias="INTAKEQ_MINUTE_LIMIT")
    intakeq_daily_limit: int = Field(500, ge=1, validation_alias="INTAKEQ_DAILY_LIMIT")
    # Length of the "minute" window; only tests and benchmarks shorten it.
    intakeq_minute_window_seconds: float = Field(
        60.0, gt=0, validation_alias="INTAKEQ_MINUTE_WINDOW_SECONDS"
    )
    secret_key: SecretStr = Field(SecretStr(DEV_SECRET), validation_alias="PQSYNC_SECRET_KEY")
    cron_secret: SecretStr = Field(SecretStr(DEV_SECRET), validation_alias="PQSYNC_CRON_SECRET")
    webhook_token: SecretStr = Field(SecretStr(DEV_SECRET), validation_alias="PQSYNC_WEBHOOK_TOKEN")
    # No token: /metrics answers 404 (it is off).
    metrics_token: SecretStr | None = Field(None, validation_alias="PQSYNC_METRICS_TOKEN")
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed; none by default.
    trusted_proxies: str = Field("", validation_alias="PQSYNC_TRUSTED_PROXIES")
    smtp_url: str | None = Field(None, validation_alias="PQSYNC_SMTP_URL")
    alert_emails: str | None = Field(None, validation_alias="PQSYNC_ALERT_EMAILS")
    timezone: str = Field("America/Denver", validation_alias="PQSYNC_TIMEZONE")
    # The zone IntakeQ reads its date filters in: every date we send and every window
    # judgement uses it (an organisation's own zone is for display).
    practice_timezone: str = Field("America/Denver", validation_alias="PQSYNC_PRACTICE_TIMEZONE")
    # A run's lease on its scope: renewed every third of it while the run lives; a run whose
    # process died frees its scope (and is closed as failed) once it lapses.
    run_lease_seconds: float = Field(
        30.0, ge=1, le=300, validation_alias="PQSYNC_RUN_LEASE_SECONDS"
    )
    # A patient's sync answers within this many seconds; one that must wait longer (IntakeQ's
    # request limit, a slow IntakeQ) answers 202 and goes on in the background.
    sync_answer_seconds: float = Field(
        8.0, ge=0.5, le=120, validation_alias="PQSYNC_SYNC_ANSWER_SECONDS"
    )
    # Patients a page of the roster lists.
    roster_page_size: int = Field(50, ge=1, le=200, validation_alias="PQSYNC_ROSTER_PAGE_SIZE")
    # Where people reach the web app: the links in alert mail start with it.
    base_url: str = Field("http://127.0.0.1:8000", validation_alias="PQSYNC_BASE_URL")
    # A browser session ends after this many idle minutes, and at the latest after
    # session_lifetime_hours (shared computers in the houses).
    session_idle_minutes: int = Field(
        30, ge=1, le=24 * 60, validation_alias="PQSYNC_SESSION_IDLE_MINUTES"
    )
    session_lifetime_hours: int = Field(
        12, ge=1, le=24 * 30, validation_alias="PQSYNC_SESSION_LIFETIME_HOURS"
    )
    # Sync logs older than this many days are pruned; none: kept forever.
    log_retention_days: int | None = Field(None, ge=1, validation_alias="PQSYNC_LOG_RETENTION_DAYS")
    # A request body must keep arriving: this long without a part of it answers 408.
    body_timeout_seconds: float = Field(
        30.0, gt=0, le=600, validation_alias="PQSYNC_BODY_TIMEOUT_SECONDS"
    )
    # A request's head (its line and headers) must arrive within this many seconds of the
    # connection's start (or of its first byte, on a kept-alive connection); else 408 and the
    # connection is closed. A connection that sends nothing is closed after it too.
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=600, validation_alias="PQSYNC_HEADER_TIMEOUT_SECONDS"
    )
    # Connections the web server holds at once (per process); past it, 503.
    max_connections: int = Field(500, ge=1, validation_alias="PQSYNC_MAX_CONNECTIONS")
    # An API token stops working this many days after it was issued.
    api_token_days: int = Field(90, ge=1, le=3650, validation_alias="PQSYNC_API_TOKEN_DAYS")
    # The change history (who changed which appointment, when) is a record, not a log: it is
    # pruned only by its own setting, never below six years; none (the default): kept forever.
    change_history_retention_days: int | None = Field(
        None, ge=2196, validation_alias="PQSYNC_CHANGE_HISTORY_RETENTION_DAYS"
    )
    # The share of the day's IntakeQ requests kept for the nightly run (and the weekly
    # verification): syncs people start may not use it.
    nightly_reserve_share: float = Field(
        0.3, ge=0, le=1, validation_alias="PQSYNC_NIGHTLY_RESERVE_SHARE"
    )
    # The share of the day's IntakeQ requests each organisation's people may spend on syncs
    # they start (1: no cap).
    organization_budget_share: float = Field(
        0.2, gt=0, le=1, validation_alias="PQSYNC_ORGANIZATION_BUDGET_SHARE"
    )
    # Syncs one person may start in an hour (a patient, or Sync all), whichever patients they
    # are for; a patient's cached re-sync within a minute is free and not counted.
    user_syncs_per_hour: int = Field(60, ge=1, validation_alias="PQSYNC_USER_SYNCS_PER_HOUR")
    # The share of the day's IntakeQ requests that webhook-started work may take.
    webhook_budget_share: float = Field(
        0.2, ge=0, le=1, validation_alias="PQSYNC_WEBHOOK_BUDGET_SHARE"
    )
    # A webhook's re-fetch waits this long, so that a burst of events for one client is one
    # (2 s: a change is on the page within about 3 s; longer saves requests in long bursts).
    webhook_coalesce_seconds: float = Field(
        2.0, ge=0, validation_alias="PQSYNC_WEBHOOK_COALESCE_SECONDS"
    )
    # The IntakeQ practice whose webhooks we act on; none: any.
    intakeq_practice_id: str | None = Field(None, validation_alias="INTAKEQ_PRACTICE_ID")

    @field_validator("timezone", "practice_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("intakeq_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"not a list of addresses or networks: {exc}") from None
        return value

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.env != "production":
            return self
        secrets = [
            ("PQSYNC_SECRET_KEY", "secret_key", self.secret_key),
            ("PQSYNC_CRON_SECRET", "cron_secret", self.cron_secret),
            ("PQSYNC_WEBHOOK_TOKEN", "webhook_token", self.webhook_token),
        ]
        if self.metrics_token is not None:
            secrets.append(("PQSYNC_METRICS_TOKEN", "metrics_token", self.metrics_token))
        for variable, field, secret in secrets:
            value = secret.get_secret_value()
            # Only the variable's name goes into the message, never its value.
            if field not in self.model_fields_set:
                raise ValueError(f"{variable} is not set (required in production)")
            if not value.strip():
                raise ValueError(f"{variable} is empty (refused in production)")
            if value.strip().lower() in DEV_SECRETS:
                raise ValueError(f"{variable} is a development default (refused in production)")
            if len(value) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"{variable} is shorter than {MIN_SECRET_LENGTH} characters "
                    "(refused in production)"
                )
            if secret_is_predictable(value):
                raise ValueError(
                    f"{variable} is too predictable: too few different characters or a "
                    f"repeating pattern (refused in production; {MAKE_ONE_WITH})"
                )
        seen: dict[str, str] = {}
        for variable, _field, secret in secrets:
            value = secret.get_secret_value().strip()
            if value in seen:
                raise ValueError(
                    f"{seen[value]} and {variable} have the same value: each secret needs its "
                    "own (refused in production)"
                )
            seen[value] = variable
        return self

    @property
    def trusted_proxy_networks(self) -> Networks:
        return parse_networks(self.trusted_proxies)

    @property
    def alert_recipients(self) -> list[str]:
        return [a.strip() for a in (self.alert_emails or "").split(",") if a.strip()]

    @property
    def intakeq_is_simulator(self) -> bool:
        return (urlsplit(self.intakeq_base_url).hostname or "") in LOOPBACK_HOSTS

    def intakeq_key(self) -> str:
        """The key to send; the simulator's default when pointing at a local simulator."""
        if self.intakeq_api_key is not None and self.intakeq_api_key.get_secret_value():
            return self.intakeq_api_key.get_secret_value()
        if self.intakeq_is_simulator:
            return SIMULATOR_API_KEY
        raise SettingsError(
            "INTAKEQ_API_KEY is not set (required unless INTAKEQ_BASE_URL is a local simulator)"
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; turn validation errors into one clear line."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise SettingsError(f"invalid configuration {loc}: {first['msg']}") from None
