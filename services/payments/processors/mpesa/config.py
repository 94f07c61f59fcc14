"""M-Pesa Daraja's settings: ``[integrations.<id>]`` with ``processor = "mpesa"``.

``shortcode`` is the ``BusinessShortCode`` the STK password is built with: the Pay Bill number, or for
Buy Goods the head office / store number, with the till in ``party_b`` (Daraja portal, captured in
``reference/processors.md`` §6 sources). The passkey comes with Lipa na M-Pesa Online (emailed after
go-live; the sandbox publishes a shared one).

``callback_ips`` is an optional allow-list of the addresses (or networks, ``196.201.214.0/24``)
callbacks may come from; empty means the source is not checked. Safaricom's callback sources as
third parties list them (pesafy-package.vercel.app/guide/webhooks, not a Safaricom page):
196.201.214.200, .206, .207, .208, 196.201.213.114, .44, 196.201.212.127, .138, .129, .136, .74, .69.
They are not a default: Safaricom does not publish them as a contract. The check sees the TCP peer;
behind a reverse proxy that is the proxy, so either list the proxy or leave the list empty (the
STK query confirms every callback anyway).

Daraja is reported to refuse callback URLs containing words such as ``mpesa``, ``m-pesa`` or
``safaricom`` (documented for C2B URL registration; reported for STK): name the integration so that
``/webhooks/<id>`` avoids them, e.g. ``lipa_main`` rather than ``mpesa_main``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from shared.settings import IntegrationSettings, PaymentMethod, PaymentsSecret, strong_secret

PRODUCTION_API = "https://api.safaricom.co.ke"
SANDBOX_API = "https://sandbox.safaricom.co.ke"


class MpesaSettings(IntegrationSettings):
    asks_driver_phone: ClassVar[bool] = True  # the STK push goes to the driver's phone
    payment_methods: ClassVar[Mapping[str, PaymentMethod]] = {"mpesa": PaymentMethod("M-Pesa", "mobile_money")}

    processor: Literal["mpesa"]
    api_base_url: str = Field(default=PRODUCTION_API, pattern=r"^https?://[^?#@\s]+$")
    shortcode: str = Field(pattern=r"^[0-9]{5,7}$")
    transaction_type: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"] = "CustomerPayBillOnline"
    # The credit party: the shortcode itself for Pay Bill, the till number for Buy Goods.
    party_b: str | None = Field(default=None, pattern=r"^[0-9]{5,7}$")
    callback_ips: list[str] = Field(default_factory=list)
    consumer_key: PaymentsSecret
    consumer_secret: PaymentsSecret
    passkey: PaymentsSecret

    _strong_secrets = field_validator("consumer_key", "consumer_secret", "passkey")(strong_secret)

    @field_validator("callback_ips")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @property
    def credit_party(self) -> str:
        return self.party_b or self.shortcode
