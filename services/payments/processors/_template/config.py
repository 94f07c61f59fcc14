"""Template's settings: ``[integrations.<id>]`` with ``processor = "template"``.

Secrets (``EVTOPUP__INTEGRATIONS__<ID>__API_KEY`` / ``…__WEBHOOK_SECRET``), typed ``PaymentsSecret`` so
that only payments loads them:

- ``api_key``: the account's secret API key, sent as ``Authorization: Bearer <key>``.
- ``webhook_secret``: the signing secret of the webhook endpoint (``<payments_public_url>/webhooks/<id>``).

Non-secret: ``api_base_url`` (the real API by default; tests point it at the simulator) and the
methods the integration offers, each one of ``payment_methods``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final, Literal

from pydantic import Field, field_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, strong_secret

# TEMPLATE: the live API's base URL (the processor's API reference, "Base URL" / "Environments"). When
# the sandbox has its own host, the operator sets it in ``api_base_url``; say so in the README section.
API_BASE_URL: Final = "https://api.template.example"


class TemplateSettings(IntegrationSettings):
    # TEMPLATE: the methods the hosted page can be limited to (the create call's method parameter in the
    # API reference): our method id → the name drivers know it by ("Card" in English, brands as they
    # are). ``wire.checkout_request`` must map each; a method it cannot limit the page to is not listed.
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {
        "card": PaymentMethod("Card", "card"),
    }

    processor: Literal["template"]
    api_base_url: str = Field(default=API_BASE_URL, pattern=r"^https?://[^?#@\s]+$")
    # TEMPLATE: the credentials, named in the processor's words (key id + key secret sent as HTTP Basic:
    # razorpay; client id + secret exchanged for a token: paypal; consumer key + secret + passkey: mpesa;
    # an HMAC key for field-signed webhooks: adyen; no webhook secret at all when every webhook is
    # confirmed by a status query: mpesa/mollie). Where keys have a live/test prefix, check it against
    # ``environment`` in a validator (stripe, razorpay, mollie), so a mix-up is refused at start.
    api_key: PaymentsSecret
    webhook_secret: PaymentsSecret

    _strong_secrets = field_validator("api_key", "webhook_secret")(strong_secret)
