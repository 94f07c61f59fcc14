"""Configuration: one TOML file, every value overridable from the environment, secrets only from the
environment (or a file named by ``<key>_file``).

Environment overrides are ``EVTOPUP__SECTION__KEY=value`` (double underscores between path parts,
case-insensitive), e.g. ``EVTOPUP__AMQP__URL`` or ``EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET``.
A bad or missing value raises :class:`ConfigError` naming the dotted key.

A secret is known by its type: each secret field is annotated with the services that may hold it
(:class:`SecretFor`). A service loads only its own secrets; the others are never read and stand as
:class:`WithheldSecret`. The operator's command line loads them all.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.color import check_contrast_with_white
from shared.money import currency_exponent

ENV_PREFIX = "EVTOPUP__"
CONFIG_ENV = "EVTOPUP_CONFIG"
ID_PATTERN = re.compile(r"^[a-z0-9_]{1,40}$")
# A DSN names its role and database but never holds a password (those are secrets of their own).
DSN_PATTERN = r"^postgres(ql)?://[^:@/]+@[^@]+$"
SERVICE_NAMES = ("page", "payments", "crediting")
LOGO_SUFFIXES = frozenset({".svg", ".png"})


class ConfigError(Exception):
    """A configuration problem; the message names the dotted key."""


@dataclass(frozen=True)
class SecretFor:
    """Marks a field as a secret that only ``services`` may hold (the operator's commands hold all)."""

    services: frozenset[str]


class WithheldSecret(SecretStr):
    """A secret that belongs to another service: present in the model, never readable here."""

    def __init__(self) -> None:
        super().__init__("")

    def get_secret_value(self) -> str:
        raise RuntimeError("this secret belongs to another service and was not loaded")

    # Two configurations compare equal where both withhold a secret (a reload compares them).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, WithheldSecret)

    def __hash__(self) -> int:
        return hash(WithheldSecret)


PageSecret = Annotated[SecretStr, SecretFor(frozenset({"page"}))]
PaymentsSecret = Annotated[SecretStr, SecretFor(frozenset({"payments"}))]
CreditingSecret = Annotated[SecretStr, SecretFor(frozenset({"crediting"}))]
# Only the operator's commands (setup, dead-letter replays, reviews): no service holds it.
OperatorSecret = Annotated[SecretStr, SecretFor(frozenset())]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def page_languages(translations_dir: str | None) -> list[str]:
    """The locales the page can speak (its catalogues, and the operator's own). Imported here, when
    settings are read, rather than at the top: the page's package owns its catalogues."""
    from services.page.i18n import available_locales

    return available_locales(translations_dir)


class OperatorSettings(_Section):
    name: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # The languages offered to drivers; empty: every language the page speaks.
    locales: list[str] = Field(default_factory=list)
    default_locale: str = "en"
    return_deep_link: str = Field(min_length=1)
    # The operator's own catalogues (``<ll_CC>.po``): translations that override the page's, or a
    # language it does not ship (README: "Languages").
    translations_dir: str | None = None
    # The operator's details on receipts, each shown when set; and the timezone (IANA) of the times
    # drivers see (history, receipts).
    legal_name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, min_length=1, max_length=500)
    vat_id: str | None = Field(default=None, min_length=1, max_length=50)
    support_email: str | None = Field(default=None, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$", max_length=254)
    timezone: str = "UTC"
    # The operator's terms, linked on the form ("By continuing you accept the terms"); their version,
    # when given, is recorded on every order made while it is in force.
    terms_url: str | None = Field(default=None, pattern=r"^https?://[^\s\"'<>]+$", max_length=500)
    terms_version: str | None = Field(default=None, pattern=r"^[^\x00-\x1f\x7f]{1,40}$")
    # Branding without code: a logo (an SVG or PNG file the page reads at start and serves itself)
    # and colours (hex), each of which white text must be readable on (WCAG 2.2 AA, 4.5:1).
    logo_path: str | None = Field(default=None, min_length=1)
    primary_color: str | None = None
    accent_color: str | None = None

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        currency_exponent(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone (e.g. Europe/Sofia)") from None
        return value

    @field_validator("primary_color", "accent_color")
    @classmethod
    def _readable_with_white_text(cls, value: str | None) -> str | None:
        return None if value is None else check_contrast_with_white(value)

    @field_validator("logo_path")
    @classmethod
    def _logo_kind(cls, value: str | None) -> str | None:
        # Only the kind is checked here (every service reads these settings); the page reads the
        # file, and checks its size and content, when it starts.
        if value is not None and Path(value).suffix.lower() not in LOGO_SUFFIXES:
            raise ValueError(f"must name a {' or '.join(sorted(LOGO_SUFFIXES))} file")
        return value

    @model_validator(mode="after")
    def _terms_complete(self) -> OperatorSettings:
        if self.terms_version is not None and self.terms_url is None:
            raise ValueError("terms_version is set without terms_url: the form links the terms it names")
        url = self.terms_url
        if url is not None and not url.startswith("https://") and not _on_this_machine(url):
            raise ValueError("terms_url must be https (http only on 127.0.0.1 or localhost)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _every_language_unless_chosen(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("locales"):
            translations_dir = data.get("translations_dir")
            return {**data, "locales": page_languages(translations_dir if isinstance(translations_dir, str) else None)}
        return data

    @model_validator(mode="after")
    def _default_is_offered(self) -> OperatorSettings:
        if self.translations_dir is not None and not Path(self.translations_dir).is_dir():
            raise ValueError(f"translations_dir {self.translations_dir!r} is not a folder")
        speaks = page_languages(self.translations_dir)
        unknown = [locale for locale in self.locales if locale not in speaks]
        if unknown:
            raise ValueError(f"locales: the page has no catalogue for {unknown}; it speaks {speaks}")
        if self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is not in locales")
        return self


class LaunchSettings(_Section):
    # "signed": the charging app opens the page with a short-lived HS256 launch token (``?token=``).
    # "open": how AMPECO opens an external top-up page, the CSMS user id (and locale) as plain URL
    # parameters; anyone can type an id, so the CSMS confirms the user and the page never shows a
    # balance or history. It needs a CSMS that can confirm users (``csms.kind = "ampeco"``).
    mode: Literal["signed", "open"] = "signed"
    user_param: str = Field(default="user_id", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")
    locale_param: str = Field(default="locale", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")
    secret: PageSecret
    token_max_age_s: int = Field(default=900, gt=0, le=900)
    # A session never outlives this, however active the driver is (at most a day).
    session_max_age_s: int = Field(default=3600, gt=0, le=86_400)
    # When set, a launch token must carry exactly this ``aud`` / ``iss`` claim.
    audience: str | None = Field(default=None, min_length=1)
    issuer: str | None = Field(default=None, min_length=1)
    # What a CSMS user id may look like; anything else in ``sub`` is refused.
    user_id_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"

    @model_validator(mode="after")
    def _distinct_parameters(self) -> LaunchSettings:
        if self.user_param == self.locale_param:
            raise ValueError("user_param and locale_param must differ")
        if "token" in (self.user_param, self.locale_param):
            raise ValueError("\"token\" is the signed launch's parameter: name the open launch's otherwise")
        return self

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
        if not isinstance(value, WithheldSecret) and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


class Package(_Section):
    id: str = Field(pattern=ID_PATTERN.pattern)
    amount_minor: int = Field(gt=0)
    bonus_minor: int = Field(default=0, ge=0)


class AmountSettings(_Section):
    min_minor: int = Field(gt=0)
    max_minor: int = Field(gt=0)
    # A custom amount must be a whole multiple of this (as min_minor and max_minor are).
    step_minor: int = Field(default=1, gt=0)
    custom_allowed: bool = True
    packages: list[Package] = Field(default_factory=list)
    # When money of a top-up goes back to the driver (a refund, a chargeback), the bonus it earned is
    # taken back in proportion ("proportional"), or left to the driver ("keep").
    bonus_on_refund: Literal["proportional", "keep"] = "proportional"

    @model_validator(mode="after")
    def _consistent(self) -> AmountSettings:
        if self.min_minor > self.max_minor:
            raise ValueError("min_minor is greater than max_minor")
        off_step = [name for name in ("min_minor", "max_minor") if getattr(self, name) % self.step_minor]
        if off_step:
            raise ValueError(f"{' and '.join(off_step)} must be multiples of step_minor ({self.step_minor})")
        ids = [p.id for p in self.packages]
        if len(ids) != len(set(ids)):
            raise ValueError("package ids must be unique")
        if not self.packages and not self.custom_allowed:
            raise ValueError("no packages and custom amounts not allowed: nothing to buy")
        return self


def strong_secret(value: SecretStr) -> SecretStr:
    if not isinstance(value, WithheldSecret) and len(value.get_secret_value()) < 16:
        raise ValueError("must be at least 16 characters")
    return value


class Fee(_Section):
    fixed_minor: int = Field(default=0, ge=0)
    # Basis points of the top-up amount (100 = 1 %), rounded half up to a whole minor unit.
    rate_bp: int = Field(default=0, ge=0, le=10_000)


class PaymentMethod(NamedTuple):
    """A method a processor takes: its name as drivers know it, and what kind of method it is: one
    of ``card``, ``wallet``, ``bank``, ``mobile_money``, ``phone`` (approved in a phone's app or by a
    code), ``qr``, ``voucher`` (a slip paid in cash), ``pay_later``, or ``payment`` (anything else)."""

    name: str
    kind: str = "payment"


class IntegrationSettings(_Section):
    """What every integration has. Each processor's package extends it with its own settings, its
    credentials named in the processor's words and typed as secrets
    (``services/payments/processors/<name>/config.py``); ``processor`` chooses which."""

    # The processor prompts the driver's phone (M-Pesa): the page asks for the number first.
    asks_driver_phone: ClassVar[bool] = False
    # The payment methods the processor takes, by the id ``methods`` names them with, each with the
    # name drivers know it by (a brand, "iDEAL", as it is; a generic name, "Card", in English, which
    # the page shows translated where its catalogue has ``method_<id>``) and its kind (the page's icon
    # for it). Empty: any id.
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {}

    processor: str
    environment: Literal["production", "test"] = "production"
    active: bool = True
    methods: list[str] = Field(min_length=1)
    fees: dict[str, Fee] = Field(default_factory=dict)
    test_users: list[str] = Field(default_factory=list)
    # Where the processor's API lives (each processor's default is its real one; tests point it at
    # a simulator).
    api_base_url: str | None = Field(default=None, pattern=r"^https?://[^?#@\s]+$")

    @model_validator(mode="after")
    def _fees_for_known_methods(self) -> IntegrationSettings:
        unknown = set(self.fees) - set(self.methods)
        if unknown:
            raise ValueError(f"fees for methods not offered: {sorted(unknown)}")
        untaken = [m for m in self.methods if self.payment_methods and m not in self.payment_methods]
        if untaken:
            raise ValueError(
                f"methods: {self.processor} does not take {untaken}; it takes {sorted(self.payment_methods)}"
            )
        return self


class NestedError(ValueError):
    """A validation error inside a section validated by hand (an integration, by its processor's
    model), with where it is, so the message names the dotted key like any other."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def processor_settings() -> Mapping[str, type[IntegrationSettings]]:
    """Each processor's settings model, by processor name. The processors' registry is imported here,
    when settings are read, rather than at the top: each processor's package owns its settings."""
    from services.payments.processors import ADAPTERS

    return {name: adapter.config_type for name, adapter in ADAPTERS.items()}


def _integration_model(entry: Mapping[str, Any]) -> type[IntegrationSettings]:
    if "processor" not in entry:
        # Typically an integration removed from the file whose secrets are still in the environment.
        raise ValueError("no processor: is this integration only in the environment (its secrets), not in the file?")
    processor = entry.get("processor")
    models = processor_settings()
    if not isinstance(processor, str) or processor not in models:
        raise ValueError(f"processor must be one of {sorted(models)}, not {processor!r}")
    return models[processor]


class CsmsSettings(_Section):
    """Where drivers' balances live. ``ledger``: crediting's own ledger is the balance. ``ampeco``:
    the ledger mirrors what was sent to an AMPECO.CHARGE tenant, and each credit is delivered there
    exactly once (a delivery row, a dispatcher, and evidence when an answer is lost)."""

    kind: Literal["ledger", "ampeco"] = "ledger"
    # The tenant, e.g. https://cpo.example.com: requests go to {base_url}/public-api/...
    base_url: str | None = Field(default=None, pattern=r"^https?://[^/?#@\s]+$")
    # The public URL of crediting's POST /webhooks/ampeco, subscribed to userBalance.changed.
    notification_url: str | None = Field(default=None, pattern=r"^https?://[^?#@\s]+$", max_length=500)
    request_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # An uncertain delivery (its answer was lost) that AMPECO's evidence has not settled this long
    # after the call is listed for the operator (and alerted on).
    uncertain_resolve_after_s: float = Field(default=600.0, gt=0)
    # A bearer token from Back Office → API Access Tokens, or OAuth client credentials.
    api_token: CreditingSecret | None = None
    client_id: str | None = Field(default=None, min_length=1)
    client_secret: CreditingSecret | None = None
    # A lost answer counts as "not applied" only when the balance read before the call is unchanged,
    # no balance notification for the user arrived since, and this long has passed since the call.
    # AMPECO answers 202 "accepted": an accepted action may show later, so this is long, and the
    # tenant must also have confirmed a change requested after the call (its queue moved past it).
    not_applied_after_s: float = Field(default=300.0, gt=0)
    # How often uncertain deliveries are re-examined (a notification settles one at once).
    evidence_interval_s: float = Field(default=5.0, gt=0)
    # Deliveries refused before sending (connection refused, 429, 5xx on a read) back off up to this.
    retry_max_backoff_s: float = Field(default=300.0, gt=0)
    # At most this many calls to the tenant at once (each user has at most one).
    max_concurrent_calls: int = Field(default=32, gt=0, le=500)
    # A notification's X-Timestamp must be this close to now; older bodies are never accepted.
    notification_max_skew_s: float = Field(default=300.0, gt=0)
    # The userBalance.changed ``type`` an add-balance call produces (undocumented: ask AMPECO and
    # narrow this); only these count as evidence of our credits.
    credit_notification_types: list[str] = Field(default=["api_top_up", "add_to_balance"], min_length=1)

    @model_validator(mode="after")
    def _ampeco_complete(self) -> CsmsSettings:
        if self.kind != "ampeco":
            return self
        if self.base_url is None:
            raise ValueError('csms.base_url is required with kind = "ampeco"')
        if self.notification_url is None:
            raise ValueError('csms.notification_url is required with kind = "ampeco"')
        if self.not_applied_after_s >= self.uncertain_resolve_after_s:
            raise ValueError("csms.not_applied_after_s must be shorter than csms.uncertain_resolve_after_s")
        if not self.base_url.startswith("https://") and not _on_this_machine(self.base_url):
            raise ValueError("csms.base_url must be https: the API token travels with every request")
        if isinstance(self.api_token, WithheldSecret) or isinstance(self.client_secret, WithheldSecret):
            return self  # another service's view: crediting checks its own credentials
        with_token = self.api_token is not None
        with_client = self.client_id is not None or self.client_secret is not None
        if with_token == with_client:
            raise ValueError(
                "csms: set either api_token (EVTOPUP__CSMS__API_TOKEN) or client_id with client_secret"
                " (EVTOPUP__CSMS__CLIENT_SECRET), not both and not neither"
            )
        if with_client and (self.client_id is None or self.client_secret is None):
            raise ValueError("csms: OAuth needs both client_id and client_secret")
        return self

    @property
    def user_id_pattern(self) -> str | None:
        """What a user id must look like for this CSMS (AMPECO's are positive integers)."""
        return r"^[1-9][0-9]{0,17}$" if self.kind == "ampeco" else None


class CreditingSettings(_Section):
    api_token: CreditingSecret

    _strong_token = field_validator("api_token")(strong_secret)


def _known_password(value: SecretStr) -> SecretStr:
    if not isinstance(value, WithheldSecret) and not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


class AmqpSettings(_Section):
    """The broker. Each service connects as a user of its own, allowed only its own exchanges and
    queues; ``username`` is the operator's account, for setup and the dead-letter tools."""

    url: str = Field(pattern=r"^amqps?://[^@]+$")
    username: str = "guest"
    password: OperatorSecret
    page_username: str = "evtopup_page"
    page_password: PageSecret
    payments_username: str = "evtopup_payments"
    payments_password: PaymentsSecret
    crediting_username: str = "evtopup_crediting"
    crediting_password: CreditingSecret
    prefetch: int = Field(default=50, gt=0, le=1000)
    # Set on the event queues by broker policy; it only catches messages that crash the consumer
    # (failures it survives are retried in process), so it must outlast a crash loop.
    delivery_limit: int = Field(default=50, gt=0, le=1000)
    rpc_timeout_s: float = Field(default=10.0, gt=0)

    _known_passwords = field_validator("password", "page_password", "payments_password", "crediting_password")(
        _known_password
    )

    def credentials(self, service: str | None) -> tuple[str, SecretStr]:
        """The broker account of ``service``, or the operator's for ``None``."""
        if service is None:
            return self.username, self.password
        username: str = getattr(self, f"{service}_username")
        password: SecretStr = getattr(self, f"{service}_password")
        return username, password


class DatabaseSettings(_Section):
    """One database per service, each reached as a role of its own that owns it and can connect to
    nothing else; ``admin`` is the operator's account that ``evtopup setup`` creates them with."""

    page: str = Field(pattern=DSN_PATTERN)
    payments: str = Field(pattern=DSN_PATTERN)
    crediting: str = Field(pattern=DSN_PATTERN)
    admin: str = Field(default="postgresql://postgres@127.0.0.1:5432/postgres", pattern=DSN_PATTERN)
    page_password: PageSecret | None = None
    payments_password: PaymentsSecret | None = None
    crediting_password: CreditingSecret | None = None
    admin_password: OperatorSecret | None = None
    pool_max_size: int = Field(default=10, gt=0, le=200)

    def dsn(self, service: str) -> str:
        dsn: str = getattr(self, service)
        return dsn

    def password(self, service: str) -> str | None:
        """The password of ``service``'s role (or the admin's), if one is configured."""
        secret: SecretStr | None = getattr(self, f"{service}_password")
        return secret.get_secret_value() if secret is not None else None


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
    # One status lookup may take this long; a processor that times out delays only its own payments.
    poll_call_timeout_s: float = Field(default=10.0, gt=0)
    # A payment whose checkout creation never returned (no processor reference, so never shown to the
    # driver) is expired after this long, as its checkout would have been.
    unconfirmed_expire_after_s: float = Field(default=3600.0, gt=0)
    # A succeeded payment not credited after this long is announced again (the ledger's derived
    # transfer id makes that safe), looked for every sweep_interval_s; each payment's announcements
    # back off, doubling up to sweep_max_backoff_s.
    sweep_after_s: float = Field(default=300.0, gt=0)
    sweep_interval_s: float = Field(default=60.0, gt=0)
    sweep_max_backoff_s: float = Field(default=3600.0, gt=0)


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

    @field_validator("integrations", mode="before")
    @classmethod
    def _integration_per_processor(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        integrations: dict[str, Any] = {}
        for integration_id, entry in value.items():
            if not isinstance(entry, dict):
                integrations[integration_id] = entry
                continue
            try:
                model = _integration_model(entry)
            except ValueError as exc:
                raise NestedError((integration_id, "processor"), str(exc)) from None
            try:
                integrations[integration_id] = model.model_validate(entry)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise NestedError((integration_id, *first["loc"]), first["msg"]) from None
        return integrations

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
            if self.csms.kind != "ledger" and not _on_this_machine(self.csms.base_url):
                raise ValueError(
                    'deployment: "demo" credits only the built-in ledger (csms.kind = "ledger") or an AMPECO'
                    " simulator on this machine (csms.base_url on 127.0.0.1 or localhost)"
                )
        if self.launch.mode == "open" and self.csms.kind != "ampeco":
            raise ValueError('launch: mode "open" needs a CSMS that confirms users (csms.kind = "ampeco")')
        if self.csms.kind == "ampeco" and currency_exponent(self.operator.currency) > 3:
            raise ValueError(f"csms: AMPECO amounts have at most 3 decimals; {self.operator.currency} has more")
        return self

    @property
    def user_id_pattern(self) -> str:
        """What a driver's user id must look like: the CSMS's own rule (AMPECO: a positive integer),
        else ``launch.user_id_pattern``."""
        return self.csms.user_id_pattern or self.launch.user_id_pattern


def _on_this_machine(url: str | None) -> bool:
    """Whether ``url`` names a loopback host: a simulator, never a real tenant's balances."""
    return url is not None and urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def _secret_owners(annotation: Any) -> frozenset[str] | None:
    """The services a field of this type may be held by, if it is a secret (also inside ``| None``)."""
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, SecretFor):
                return meta.services
    for arg in get_args(annotation):
        owners = _secret_owners(arg)
        if owners is not None:
            return owners
    return None


def _field_owners(model: type[BaseModel], name: str) -> frozenset[str] | None:
    field = model.model_fields[name]
    for meta in field.metadata:
        if isinstance(meta, SecretFor):
            return meta.services
    return _secret_owners(field.annotation)


def _section_of(model: type[BaseModel], name: str) -> tuple[type[BaseModel], bool] | None:
    """The model of a sub-section, and whether it is a table of them keyed by id (integrations)."""
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict:
        value_type = get_args(annotation)[1]
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            return value_type, True
    return None


def _secret_fields(
    node: dict[str, Any], model: type[BaseModel], path: str, *, fill: bool = False
) -> list[tuple[dict[str, Any], str, str, frozenset[str]]]:
    """Every secret field under ``node`` (the raw data of ``model``): (its table, name, dotted key,
    owners). With ``fill``, missing sections are added, so that their secrets can be withheld."""
    found: list[tuple[dict[str, Any], str, str, frozenset[str]]] = []
    for name in model.model_fields:
        dotted = f"{path}.{name}" if path else name
        owners = _field_owners(model, name)
        if owners is not None:
            found.append((node, name, dotted, owners))
            continue
        section = _section_of(model, name)
        if section is not None and fill and not section[1]:
            node.setdefault(name, {})
        child = node.get(name)
        if section is None or not isinstance(child, dict):
            continue
        section_model, keyed = section
        if not keyed:
            found += _secret_fields(child, section_model, dotted, fill=fill)
            continue
        for key, entry in child.items():
            if isinstance(entry, dict):
                entry_model = _keyed_models(section_model, entry)[0]
                found += _secret_fields(entry, entry_model, f"{dotted}.{key}", fill=fill)
    return found


def _keyed_models(model: type[BaseModel], entry: Mapping[str, Any] | None = None) -> list[type[BaseModel]]:
    """The models an entry of a keyed table may have: an integration's is its processor's (any
    processor's, when the entry is not known, as for an environment variable's name)."""
    if model is not IntegrationSettings:
        return [model]
    models = processor_settings()
    processor = entry.get("processor") if entry is not None else None
    if isinstance(processor, str) and processor in models:
        return [models[processor]]
    return [*models.values(), model]


def _secret_owners_at(parts: list[str]) -> frozenset[str] | None:
    """The services that may hold the setting at ``parts``, if it is a secret."""
    model: type[BaseModel] = Settings
    index = 0
    while index < len(parts):
        name = parts[index]
        if name not in model.model_fields:
            return None
        section = _section_of(model, name)
        if index == len(parts) - 1 or section is None:
            return _field_owners(model, name) if index == len(parts) - 1 else None
        model, keyed = section
        index += 2 if keyed else 1
        if keyed and index == len(parts) - 1:
            owners = [_field_owners(m, parts[-1]) for m in _keyed_models(model) if parts[-1] in m.model_fields]
            return next((o for o in owners if o is not None), None)
    return None


def _refuse_literal_secrets(data: dict[str, Any]) -> None:
    for node, name, dotted, _owners in _secret_fields(data, Settings, ""):
        if name in node:
            raise ConfigError(
                f"{dotted}: secrets may not be written in the config file; set "
                f"{ENV_PREFIX}{dotted.replace('.', '__').upper()} or {dotted}_file"
            )


def _resolve_secrets(data: dict[str, Any], service: str | None) -> None:
    """Read each ``<secret>_file`` the service may hold; withhold every secret it may not hold."""
    for node, name, dotted, owners in _secret_fields(data, Settings, "", fill=service is not None):
        path = node.pop(f"{name}_file", None)
        if service is not None and service not in owners:
            node[name] = WithheldSecret()
            continue
        if path is None:
            continue
        if not isinstance(path, str):
            raise ConfigError(f"{dotted}_file: must be a file path")
        try:
            node[name] = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{dotted}_file: cannot read secret file: {exc.strerror}") from exc


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
        # A secret (or a secret's file) is taken as it is, whatever characters it starts with.
        key = parts[-1]
        plain = key.removesuffix("_file")
        value = raw if _secret_owners_at([*parts[:-1], plain]) is not None else _env_value(name, raw)
        if isinstance(value, dict) and _holds_secrets(parts, value):
            # Each secret has a variable of its own, which `run all` can keep from other services.
            raise ConfigError(f"{name}: a table set as JSON may not hold secrets; set each one by its own variable")
        node[key] = value


def _holds_secrets(parts: list[str], value: dict[str, Any]) -> bool:
    """Whether ``value``, set at ``parts`` as a JSON table, holds a secret (or a secret's file)."""
    nested: dict[str, Any] = value
    for part in reversed(parts):
        nested = {part: nested}
    return any(
        name in node or f"{name}_file" in node for node, name, _dotted, _owners in _secret_fields(nested, Settings, "")
    )


def secret_environment_names(environ: Mapping[str, str], service: str) -> list[str]:
    """The ``EVTOPUP__…`` variables in ``environ`` that set secrets ``service`` may not hold: what a
    parent process removes before starting the service."""
    withheld = []
    for name in environ:
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        parts[-1] = parts[-1].removesuffix("_file")
        owners = _secret_owners_at(parts)
        if owners is not None and service not in owners:
            withheld.append(name)
    return withheld


def _env_value(name: str, raw: str) -> Any:
    """Environment values stay strings (pydantic converts numbers and booleans); a value that starts
    with ``[`` or ``{`` is read as JSON so that lists and tables can be overridden too."""
    if raw[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: not valid JSON") from exc
    return raw


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None, *, service: str | None = None
) -> Settings:
    """The configuration as ``service`` may see it (its own secrets only), or whole for the operator's
    commands (``service=None``)."""
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
    _refuse_literal_secrets(data)
    _apply_env(data, environ)
    _resolve_secrets(data, service)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        nested = first.get("ctx", {}).get("error")
        if isinstance(nested, NestedError):
            loc, message = (*loc, *nested.loc), nested.message.removeprefix("Value error, ")
        key = ".".join(str(p) for p in loc)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        # Whole-file rules name their keys in the message itself.
        raise ConfigError(f"{key}: {message}{more}" if key else f"{message}{more}") from None


# What a running service takes from a reload (SIGHUP, ``evtopup reload``); anything else needs a restart.
RELOADABLE_SECTIONS = frozenset({"integrations"})
# What may not change for an integration that payments already hold: their money was taken under it.
_FIXED_PER_INTEGRATION = ("processor", "environment")


def reloaded_settings(
    current: Settings, path: str | Path | None, environ: Mapping[str, str] | None = None, *, service: str | None
) -> Settings:
    """The configuration read again, if a running service can take it: only ``[integrations]`` may
    differ; an integration may be added, switched on or off (``active``), or given new credentials or
    methods, but never removed (its payments' webhooks, polling, refunds and disputes need it) and
    never moved to another processor or environment. ConfigError says what stands in the way."""
    new = load_settings(path, environ, service=service)
    needs_restart = sorted(
        name
        for name in Settings.model_fields
        if name not in RELOADABLE_SECTIONS and getattr(new, name) != getattr(current, name)
    )
    if needs_restart:
        raise ConfigError(f"{', '.join(needs_restart)}: changed, and only [integrations] is reloaded; restart to apply")
    removed = sorted(set(current.integrations) - set(new.integrations))
    if removed:
        raise ConfigError(
            f"integrations: {removed} removed; set active = false instead and remove them with a restart once"
            " `evtopup integrations` shows them retired and no refund or dispute can still come"
        )
    for integration_id, integration in current.integrations.items():
        for key in _FIXED_PER_INTEGRATION:
            if getattr(new.integrations[integration_id], key) != getattr(integration, key):
                raise ConfigError(
                    f"integrations.{integration_id}.{key}: cannot change under the payments made with it;"
                    " add a new integration instead"
                )
    return new


def changed_integrations(current: Settings, new: Settings) -> frozenset[str]:
    """The integrations a reload adds or changes."""
    return frozenset(i for i, integration in new.integrations.items() if current.integrations.get(i) != integration)


def apply_reload(current: Settings, new: Settings) -> None:
    """Make ``current`` hold ``new``'s integrations. In place, on purpose: every part of a service
    holds the one ``Settings`` it started with, and each reads ``integrations`` when it needs it, so
    all see the change at once (between two awaits: nothing sees half of it)."""
    current.integrations.clear()
    current.integrations.update(new.integrations)
