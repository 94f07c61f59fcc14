"""The operator's price list, without I/O: which integration serves a driver and what a top-up
costs (amount, bonus, fee per method). The page prices to show and to order; payments prices again
from its own configuration to charge, and never takes the page's numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.money import MoneyError, basis_points, require_minor
from shared.settings import AmountSettings, IntegrationSettings, Settings

ALLOWED_FIELDS = frozenset({"package_id", "amount_minor", "method"})


class InvalidTopup(Exception):
    """A top-up request that cannot be priced: ``field`` names what is wrong, ``detail`` says it in
    English (the API's), and ``code`` with ``params`` let a page say it in the driver's language
    (parameters named ``<x>_minor`` are amounts in the operator's currency)."""

    def __init__(self, field: str, detail: str, code: str = "invalid", **params: int | str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail
        self.code = code
        self.params = params


@dataclass(frozen=True)
class PricedTopup:
    package_id: str | None
    amount_minor: int
    bonus_minor: int
    fee_minor: int
    currency: str
    method: str

    @property
    def charge_minor(self) -> int:
        return self.amount_minor + self.fee_minor


def integration_for_user(settings: Settings, user_id: str) -> str:
    """Test integrations serve only their allow-listed users; everyone else gets the active
    production integration (the settings guarantee there is exactly one)."""
    for integration_id, integration in settings.integrations.items():
        if integration.environment == "test" and integration.active and user_id in integration.test_users:
            return integration_id
    return next(i for i, s in settings.integrations.items() if s.environment == "production" and s.active)


def method_fee(integration: IntegrationSettings, method: str, amount_minor: int) -> int:
    fee = integration.fees.get(method)
    if fee is None:
        return 0
    return fee.fixed_minor + basis_points(amount_minor, fee.rate_bp)


def price_topup(
    body: dict[str, Any], amounts: AmountSettings, integration: IntegrationSettings, currency: str
) -> PricedTopup:
    unknown = set(body) - ALLOWED_FIELDS
    if unknown:
        raise InvalidTopup(sorted(unknown)[0], f"unknown field {sorted(unknown)[0]!r}", "unknown_field")
    has_package, has_amount = "package_id" in body, "amount_minor" in body
    if has_package == has_amount:
        raise InvalidTopup("package_id", "give exactly one of package_id and amount_minor", "package_or_amount")
    method = body.get("method", integration.methods[0])
    if method not in integration.methods:
        raise InvalidTopup("method", f"method must be one of {integration.methods}", "method_not_offered")
    if has_package:
        package = next((p for p in amounts.packages if p.id == body["package_id"]), None)
        if package is None:
            raise InvalidTopup("package_id", "no such package", "package_unknown")
        amount_minor, bonus_minor, package_id = package.amount_minor, package.bonus_minor, package.id
    else:
        if not amounts.custom_allowed:
            raise InvalidTopup("amount_minor", "custom amounts are not offered; choose a package", "custom_not_offered")
        try:
            amount_minor = require_minor(body["amount_minor"], "amount_minor")
        except MoneyError as exc:
            raise InvalidTopup("amount_minor", str(exc), "amount_invalid", example_minor=amounts.min_minor) from None
        if not amounts.min_minor <= amount_minor <= amounts.max_minor:
            raise InvalidTopup(
                "amount_minor",
                f"amount_minor must be between {amounts.min_minor} and {amounts.max_minor}",
                "amount_out_of_range",
                min_minor=amounts.min_minor,
                max_minor=amounts.max_minor,
            )
        if amount_minor % amounts.step_minor:
            # The nearest amounts that are taken (min and max are multiples of the step, so both lie
            # between them): what the driver is offered instead.
            lower = amount_minor - amount_minor % amounts.step_minor
            raise InvalidTopup(
                "amount_minor",
                f"amount_minor must be a multiple of {amounts.step_minor}",
                "amount_step",
                step_minor=amounts.step_minor,
                lower_minor=lower,
                higher_minor=lower + amounts.step_minor,
            )
        bonus_minor, package_id = 0, None
    return PricedTopup(
        package_id=package_id,
        amount_minor=amount_minor,
        bonus_minor=bonus_minor,
        fee_minor=method_fee(integration, method, amount_minor),
        currency=currency,
        method=method,
    )
