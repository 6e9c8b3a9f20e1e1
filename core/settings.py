"""Settings from the environment and `.env`, under the names in the developers' guide.

Secrets are :class:`SecretStr`, so they never print. A credential is only required for a
provider that is actually used: :meth:`Settings.require` fails at start-up with a message that
names the variable to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.budgets import BudgetError, parse_budget


class MissingSettingError(RuntimeError):
    """A setting the chosen configuration needs is not set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    refunds_task_queue: str = "refunds"

    mews_base_url: str = "https://api.mews-demo.com"
    mews_client_token: SecretStr | None = None
    mews_access_token: SecretStr | None = None
    mews_client: str = "refund-orchestrator 0.1.0"

    paynow_base_url: str = "https://api.sandbox.paynow.pl"
    paynow_api_key: SecretStr | None = None
    paynow_signature_key: SecretStr | None = None
    # Merchant profiles (docs/profiles.md): a TOML file naming Mews and Paynow profiles and
    # where each one's credentials are (environment variables or files, never inline). The
    # MEWS_*/PAYNOW_* settings above stay the profile "default".
    refunds_profiles_file: Path | None = None

    refunds_http_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    refunds_poll_initial_s: Annotated[float, Field(gt=0)] = 5.0
    refunds_poll_max_s: Annotated[float, Field(gt=0)] = 300.0
    refunds_attention_after_s: Annotated[float, Field(gt=0)] = 48 * 3600.0
    refunds_call_timeout_s: Annotated[float, Field(ge=1, le=600)] = 60.0
    # Evidence before a lost Mews refund call is sent again (README "Guarantees"): wait this
    # long for Mews to show what it made, then look this many times, each finding nothing.
    refunds_reconcile_settle_s: Annotated[float, Field(ge=1, le=3_600)] = 30.0
    refunds_reconcile_lookups: Annotated[int, Field(ge=1, le=10)] = 2
    # How much one worker holds (docs/performance.md): workflows kept in its sticky cache (an
    # evicted one is replayed from its history at its next task, so memory stays bounded with
    # any number of open refunds), and tasks run at once. Unset: the SDK's own default. The
    # cache's default is measured: 1,500 pending refunds on one worker peaked at 249 MB with
    # 250 (336 MB with 500; the SDK's 1000 would pass 300 MB).
    refunds_worker_max_cached_workflows: Annotated[int, Field(ge=0, le=100_000)] = 250
    refunds_worker_max_concurrent_activities: Annotated[int, Field(ge=1, le=10_000)] | None = None
    refunds_worker_max_concurrent_workflow_tasks: Annotated[int, Field(ge=2, le=10_000)] | None = (
        None
    )
    # Provider budgets (docs/operations.md, "Provider budgets"): every call on one Mews access
    # token, or one Paynow API key, from every worker, counts against one budget "N/Ts" (at
    # most N requests in any T seconds), kept by Temporal's task queue rate limit; "none": no
    # budget. Mews documents 200 per 30 s; Paynow documents none. Blank: the default.
    refunds_mews_budget: str | None = "200/30s"
    refunds_paynow_budget: str | None = None
    # The worker's Prometheus endpoint (/metrics); unset: no endpoint (docs/observability.md).
    refunds_metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None

    # Payload encryption (docs/encryption.md): "id:base64key,..." of 32-byte keys; the
    # active id encrypts, every listed key decrypts. Parsed and checked by `codec`.
    refunds_encryption_keys: SecretStr | None = None
    refunds_encryption_key_id: str | None = None
    refunds_codec_auth_token: SecretStr | None = None
    refunds_codec_ui_origins: str = "http://localhost:8233,http://127.0.0.1:8233"

    # The HTTP API, `refunds api` (docs/api.md). Keys are stored as SHA-256 hashes of the
    # bearer tokens, never the tokens: a JSON list of {"name", "sha256", "scopes"}, inline
    # or in a file. Without any key the API refuses to start unless the insecure flag is set.
    refunds_api_host: str = "127.0.0.1"
    refunds_api_port: Annotated[int, Field(ge=1, le=65535)] = 8240
    refunds_api_keys: str | None = None
    refunds_api_keys_file: Path | None = None
    refunds_api_insecure_no_auth: bool = False
    refunds_api_max_body_bytes: Annotated[int, Field(ge=1024, le=10 * 1024 * 1024)] = 65536
    # Mews' PaymentUpdated webhook in (docs/api.md): the secret token in the URL registered
    # with Mews, /webhooks/mews/<token>. Unset: the endpoint answers 404.
    mews_webhook_token: SecretStr | None = None

    # Outcome events (a request's notify_url; docs/events.md). The signing secret is the
    # worker's (Standard Webhooks, "whsec_" + base64). Private, loopback and link-local
    # receivers are refused unless allowed, where refunds start and on the worker. The retry
    # timing is read by the starter and carried in each refund, like the poll settings.
    refunds_events_secret: SecretStr | None = None
    refunds_events_allow_private: bool = False
    refunds_events_retry_initial_s: Annotated[float, Field(gt=0, le=3_600)] = 5.0
    refunds_events_retry_max_s: Annotated[float, Field(gt=0, le=86_400)] = 3_600.0
    refunds_events_give_up_after_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 3 * 86_400.0

    @field_validator("refunds_mews_budget", "refunds_paynow_budget", mode="before")
    @classmethod
    def _budget(cls, value: object, info: ValidationInfo) -> str | None:
        """A budget as written canonically ("200/30s"), or None for none."""
        if value is None:
            return None
        if isinstance(value, str) and not value.strip():
            default = cls.model_fields[info.field_name or ""].default
            return default if isinstance(default, str) else None
        if not isinstance(value, str):
            raise ValueError("a budget is a string, N/Ts")
        try:
            budget = parse_budget(value)
        except BudgetError as err:
            raise ValueError(str(err)) from None
        return None if budget is None else str(budget)

    def require(self, env_name: str, *, purpose: str) -> SecretStr:
        """The secret stored under ``env_name``, or a start-up error naming it."""
        value = getattr(self, env_name.lower(), None)
        if not isinstance(value, SecretStr) or not value.get_secret_value():
            raise MissingSettingError(
                f"{env_name} is not set: it is needed for {purpose}. "
                f"Set it in the environment or in .env (see .env.example)."
            )
        return value
