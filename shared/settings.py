"""Configuration: one TOML file, every value overridable from the environment, secrets only from the
environment (or a file named by ``<key>_file``).

Environment overrides are ``EVTOPUP__SECTION__KEY=value`` (double underscores between path parts,
case-insensitive), e.g. ``EVTOPUP__AMQP__URL`` or ``EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET``.
A bad or missing value raises :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.money import currency_exponent

ENV_PREFIX = "EVTOPUP__"
CONFIG_ENV = "EVTOPUP_CONFIG"
# Keys whose values are secrets: a literal value in the TOML file is refused.
SECRET_KEYS = frozenset({"secret", "password", "api_token", "api_key", "webhook_secret"})
ID_PATTERN = re.compile(r"^[a-z0-9_]{1,40}$")


class ConfigError(Exception):
    """A configuration problem; the message names the dotted key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OperatorSettings(_Section):
    name: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    locales: list[str] = Field(min_length=1)
    default_locale: str
    return_deep_link: str = Field(min_length=1)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        currency_exponent(value)
        return value

    @model_validator(mode="after")
    def _default_is_offered(self) -> OperatorSettings:
        if self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is not in locales")
        return self


class LaunchSettings(_Section):
    # Only signed launches for now: the "open" compatibility mode needs a CSMS that can confirm users.
    mode: Literal["signed"] = "signed"
    secret: SecretStr
    token_max_age_s: int = Field(default=900, gt=0, le=900)
    # A session never outlives this, however active the driver is (at most a day).
    session_max_age_s: int = Field(default=3600, gt=0, le=86_400)
    # When set, a launch token must carry exactly this ``aud`` / ``iss`` claim.
    audience: str | None = Field(default=None, min_length=1)
    issuer: str | None = Field(default=None, min_length=1)
    # What a CSMS user id may look like; anything else in ``sub`` is refused.
    user_id_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"

    @field_validator("user_id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # The HS256 key signs every launch: short keys can be brute-forced offline from one token.
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


class Package(_Section):
    id: str = Field(pattern=ID_PATTERN.pattern)
    amount_minor: int = Field(gt=0)
    bonus_minor: int = Field(default=0, ge=0)


class AmountSettings(_Section):
    min_minor: int = Field(gt=0)
    max_minor: int = Field(gt=0)
    custom_allowed: bool = True
    packages: list[Package] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> AmountSettings:
        if self.min_minor > self.max_minor:
            raise ValueError("min_minor is greater than max_minor")
        ids = [p.id for p in self.packages]
        if len(ids) != len(set(ids)):
            raise ValueError("package ids must be unique")
        if not self.packages and not self.custom_allowed:
            raise ValueError("no packages and custom amounts not allowed: nothing to buy")
        return self


def _strong_secret(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 16:
        raise ValueError("must be at least 16 characters")
    return value


class Fee(_Section):
    fixed_minor: int = Field(default=0, ge=0)
    # Basis points of the top-up amount (100 = 1 %), rounded half up to a whole minor unit.
    rate_bp: int = Field(default=0, ge=0, le=10_000)


class IntegrationSettings(_Section):
    processor: Literal["sandbox"]
    environment: Literal["production", "test"] = "production"
    active: bool = True
    methods: list[str] = Field(min_length=1)
    fees: dict[str, Fee] = Field(default_factory=dict)
    test_users: list[str] = Field(default_factory=list)
    api_key: SecretStr
    webhook_secret: SecretStr
    # Where the processor's API lives; for the sandbox, the payments service itself.
    api_base_url: str | None = None

    _strong_secrets = field_validator("api_key", "webhook_secret")(_strong_secret)

    @model_validator(mode="after")
    def _fees_for_known_methods(self) -> IntegrationSettings:
        unknown = set(self.fees) - set(self.methods)
        if unknown:
            raise ValueError(f"fees for methods not offered: {sorted(unknown)}")
        return self


class CsmsSettings(_Section):
    kind: Literal["ledger"] = "ledger"


class CreditingSettings(_Section):
    api_token: SecretStr

    _strong_token = field_validator("api_token")(_strong_secret)


class AmqpSettings(_Section):
    url: str = Field(pattern=r"^amqps?://[^@]+$")
    username: str = "guest"
    password: SecretStr = Field(min_length=1)
    prefetch: int = Field(default=50, gt=0, le=1000)
    delivery_limit: int = Field(default=10, gt=0, le=1000)
    rpc_timeout_s: float = Field(default=10.0, gt=0)


class DatabaseSettings(_Section):
    page: str = Field(pattern=r"^postgres(ql)?://")
    payments: str = Field(pattern=r"^postgres(ql)?://")
    crediting: str = Field(pattern=r"^postgres(ql)?://")
    pool_max_size: int = Field(default=10, gt=0, le=200)


class ServiceSettings(_Section):
    host: str = "127.0.0.1"
    page_port: int = Field(default=8080, gt=0, lt=65536)
    payments_port: int = Field(default=8081, gt=0, lt=65536)
    crediting_port: int = Field(default=8082, gt=0, lt=65536)
    # /healthz, /readyz and /metrics live on internal ports, never exposed to drivers or processors.
    internal_host: str = "127.0.0.1"
    page_internal_port: int = Field(default=9080, gt=0, lt=65536)
    payments_internal_port: int = Field(default=9081, gt=0, lt=65536)
    crediting_internal_port: int = Field(default=9082, gt=0, lt=65536)
    page_public_url: str
    payments_public_url: str
    # How the sandbox processor reaches the payments webhook endpoint.
    payments_internal_url: str


class PaymentsSettings(_Section):
    """How payments heals what processors and the broker lose."""

    # Pending payments untouched for poll_after_s are asked about; failures back off per payment,
    # doubling from poll_interval_s up to poll_max_backoff_s.
    poll_interval_s: float = Field(default=30.0, gt=0)
    poll_after_s: float = Field(default=60.0, ge=0)
    poll_max_backoff_s: float = Field(default=900.0, gt=0)
    poll_batch: int = Field(default=50, gt=0, le=1000)
    # A failed or expired payment is still polled this long: a late success is credited.
    poll_grace_s: float = Field(default=3600.0, ge=0)
    # A succeeded payment not credited after this long is announced again (the ledger's derived
    # transfer id makes that safe), every sweep_interval_s.
    sweep_after_s: float = Field(default=300.0, gt=0)
    sweep_interval_s: float = Field(default=60.0, gt=0)


class RetentionSettings(_Section):
    """How long plumbing rows are kept; a janitor deletes older ones every interval_s."""

    inbox_days: float = Field(default=30, gt=0)
    processor_event_body_days: float = Field(default=90, gt=0)
    sandbox_checkout_days: float = Field(default=7, gt=0)
    interval_s: float = Field(default=3600, gt=0)


class Settings(_Section):
    # "demo" runs only the sandbox processor and the built-in ledger, and every page says so;
    # "production" refuses the sandbox: no configuration that can take real money credits unpaid.
    deployment: Literal["demo", "production"] = "production"
    operator: OperatorSettings
    launch: LaunchSettings
    amounts: AmountSettings
    integrations: dict[str, IntegrationSettings] = Field(min_length=1)
    csms: CsmsSettings = CsmsSettings()
    crediting: CreditingSettings
    amqp: AmqpSettings
    databases: DatabaseSettings
    services: ServiceSettings
    payments: PaymentsSettings = PaymentsSettings()
    retention: RetentionSettings = RetentionSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _integrations_sane(self) -> Settings:
        for integration_id in self.integrations:
            if not ID_PATTERN.match(integration_id):
                raise ValueError(f"integrations: id {integration_id!r} must match {ID_PATTERN.pattern}")
        active_production = [i for i, s in self.integrations.items() if s.environment == "production" and s.active]
        if len(active_production) != 1:
            raise ValueError(
                f"integrations: exactly one active production integration is required, found {active_production}"
            )
        sandboxes = sorted(i for i, s in self.integrations.items() if s.processor == "sandbox")
        if self.deployment == "production" and sandboxes:
            raise ValueError(
                f"deployment: the sandbox processor credits without payment; integrations {sandboxes} are"
                ' allowed only with deployment = "demo"'
            )
        if self.deployment == "demo":
            real = sorted(set(self.integrations) - set(sandboxes))
            if real:
                raise ValueError(f'deployment: "demo" runs only sandbox integrations, not {real}')
            if self.csms.kind != "ledger":
                raise ValueError('deployment: "demo" credits only the built-in ledger (csms.kind = "ledger")')
        return self


def _refuse_literal_secrets(node: dict[str, Any], path: str) -> None:
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            _refuse_literal_secrets(value, dotted)
        elif key in SECRET_KEYS:
            raise ConfigError(
                f"{dotted}: secrets may not be written in the config file; set "
                f"{ENV_PREFIX}{dotted.replace('.', '__').upper()} or {dotted}_file"
            )


def _read_secret_files(node: dict[str, Any], path: str) -> None:
    """Replace each ``<secret>_file`` key (from the file or the environment) by the file's content."""
    for key in list(node):
        value = node[key]
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            _read_secret_files(value, dotted)
        elif key.endswith("_file") and key[: -len("_file")] in SECRET_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"{dotted}: must be a file path")
            try:
                node[key[: -len("_file")]] = Path(value).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{dotted}: cannot read secret file: {exc.strerror}") from exc
            del node[key]


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"{name}: empty key part in environment override")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts)}: {part} is not a section")
            node = child
        # A secret is taken as it is, whatever characters it starts with.
        node[parts[-1]] = raw if parts[-1] in SECRET_KEYS else _env_value(name, raw)


def _env_value(name: str, raw: str) -> Any:
    """Environment values stay strings (pydantic converts numbers and booleans); a value that starts
    with ``[`` or ``{`` is read as JSON so that lists and tables can be overridden too."""
    if raw[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: not valid JSON") from exc
    return raw


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no config file: pass --config or set {CONFIG_ENV}")
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    _refuse_literal_secrets(data, "")
    _apply_env(data, environ)
    _read_secret_files(data, "")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        # Whole-file rules name their keys in the message itself.
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{key}: {message}{more}" if key else f"{message}{more}") from None
