"""The top-up form's rules without I/O: the custom amount's step (shared/pricing.py, the settings),
the summary's total (services/page/form.py, the same pricing and rounding as the order), the payment
methods' icons (services/page/method_icons.py), the operator's branding (shared/color.py contrast,
services/page/assets.py logo and stylesheet, the settings), the terms sentence, the balance before
paying from crediting's user lookup (services/crediting/user_rpc.py: signed launches only)."""

from __future__ import annotations

import asyncio
import re
import struct
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from services.crediting.csms import CsmsUser, UnknownUser
from services.crediting.user_rpc import user_lookup_handler
from services.page import assets, service, topup_form
from services.page.i18n import Translator
from services.page.method_icons import DEFAULT_KIND, ICON_KINDS, METHOD_ICON_KINDS, icon_kind
from services.payments.processors import ADAPTERS
from services.payments.processors.sandbox.config import SandboxSettings
from shared.amqp import RpcError, RpcTimeout
from shared.color import check_contrast_with_white, contrast_ratio, darkened_for_contrast, normalise_hex
from shared.money import basis_points
from shared.pricing import InvalidTopup, price_topup
from shared.settings import AmountSettings, ConfigError, Fee, Package, Settings, load_settings
from tests.unit.test_settings import DEMO_TOML, SECRETS, TEST_INTEGRATION, TEST_INTEGRATION_SECRETS

AMOUNTS = AmountSettings(
    min_minor=500,
    max_minor=50_000,
    step_minor=250,
    packages=[Package(id="p10", amount_minor=1000), Package(id="p25", amount_minor=2500, bonus_minor=150)],
)
INTEGRATION = SandboxSettings(
    processor="sandbox",
    methods=["card", "wallet"],
    fees={"wallet": Fee(fixed_minor=25, rate_bp=200)},
    api_key=SecretStr("sk_test_0123456789abcdef"),
    webhook_secret=SecretStr("whsec_test_0123456789"),
)


def load(tmp_path: Path, env: dict[str, str] | None = None, text: str = DEMO_TOML) -> Settings:
    path = tmp_path / "evtopup.toml"
    path.write_text(text)
    return load_settings(path, {**SECRETS, **(env or {})})


def config_error(tmp_path: Path, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env)
    return str(info.value)


# --- the custom amount's step ----------------------------------------------------------------------


def test_a_custom_amount_must_be_a_multiple_of_the_step() -> None:
    assert price_topup({"amount_minor": 1250}, AMOUNTS, INTEGRATION, "EUR").amount_minor == 1250
    with pytest.raises(InvalidTopup) as info:
        price_topup({"amount_minor": 1260}, AMOUNTS, INTEGRATION, "EUR")
    refused = info.value
    assert (refused.field, refused.code) == ("amount_minor", "amount_step")
    # The step, and the nearest amounts that are taken, for the driver's message.
    assert refused.params == {"step_minor": 250, "lower_minor": 1250, "higher_minor": 1500}
    assert "multiple of 250" in refused.detail


def test_the_limits_come_before_the_step_and_packages_have_no_step() -> None:
    with pytest.raises(InvalidTopup) as info:
        price_topup({"amount_minor": 50_001}, AMOUNTS, INTEGRATION, "EUR")
    assert info.value.code == "amount_out_of_range"
    # A package is what it is, whatever the custom amounts' step.
    odd = AmountSettings(min_minor=500, max_minor=5000, step_minor=500, packages=[Package(id="p7", amount_minor=777)])
    assert price_topup({"package_id": "p7"}, odd, INTEGRATION, "EUR").amount_minor == 777


def test_the_step_is_one_minor_unit_by_default() -> None:
    amounts = AmountSettings(min_minor=101, max_minor=999)
    assert amounts.step_minor == 1
    assert price_topup({"amount_minor": 577}, amounts, INTEGRATION, "EUR").amount_minor == 577


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_minor": 500, "max_minor": 50_000, "step_minor": 0}, "step_minor"),
        ({"min_minor": 510, "max_minor": 50_000, "step_minor": 100}, "min_minor must be multiples of step_minor"),
        ({"min_minor": 500, "max_minor": 50_050, "step_minor": 100}, "max_minor must be multiples of step_minor"),
        ({"min_minor": 550, "max_minor": 50_050, "step_minor": 100}, "min_minor and max_minor must be multiples"),
    ],
)
def test_the_limits_must_be_multiples_of_the_step(values: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AmountSettings(**values)  # type: ignore[arg-type]


def test_the_step_in_the_configuration_file_names_its_key(tmp_path: Path) -> None:
    assert load(tmp_path, {"EVTOPUP__AMOUNTS__STEP_MINOR": "500"}).amounts.step_minor == 500
    message = config_error(tmp_path, {"EVTOPUP__AMOUNTS__STEP_MINOR": "300"})
    assert message.startswith("amounts:") and "multiples of step_minor (300)" in message


def test_the_step_error_is_said_in_the_drivers_language_with_its_amounts() -> None:
    params = {"step_minor": 250, "lower_minor": 1250, "higher_minor": 1500}
    assert Translator("en").error("amount_step", params, "EUR") == (
        "Please enter an amount in steps of €2.50, for example €12.50 or €15.00."
    )
    assert topup_form.step_hint(Translator("en"), AMOUNTS, "EUR") == "In steps of €2.50"
    assert topup_form.step_hint(Translator("en"), AmountSettings(min_minor=1, max_minor=9), "EUR") is None


# --- the summary: amount, bonus, fee and total ----------------------------------------------------


def summary(**choice: Any) -> topup_form.Summary | None:
    values: dict[str, Any] = {"package_id": "", "amount_text": "", "method": "card"} | choice
    return topup_form.summarise(AMOUNTS, INTEGRATION, "EUR", **values)


def test_the_total_is_the_amount_plus_the_methods_fee() -> None:
    assert summary(package_id="p25", method="card") == topup_form.Summary(2500, 150, 0, 2500, "card")
    # 25 fixed + 2 % of 25.00 = 0.75
    assert summary(package_id="p25", method="wallet") == topup_form.Summary(2500, 150, 75, 2575, "wallet")
    # A typed amount, as the driver types it (a comma is a decimal point).
    assert summary(amount_text="12,50", method="wallet") == topup_form.Summary(1250, 0, 50, 1300, "wallet")


def test_the_fee_rounds_half_up_like_the_order() -> None:
    # 2 % of 10.25 is 0.205: half up to 0.21, as shared.money.basis_points and form.js round it.
    amounts = AmountSettings(min_minor=1, max_minor=100_000)
    got = topup_form.summarise(amounts, INTEGRATION, "EUR", package_id="", amount_text="10.25", method="wallet")
    assert got is not None and got.fee_minor == 25 + 21 == 25 + basis_points(1025, 200)
    assert (
        got.total_minor
        == price_topup({"amount_minor": 1025, "method": "wallet"}, amounts, INTEGRATION, "EUR").charge_minor
    )


@pytest.mark.parametrize("typed", ["", "  ", "abc", "12.345", "0.01", "1000.00", "12.60"])
def test_no_total_for_an_amount_that_would_be_refused(typed: str) -> None:
    assert summary(amount_text=typed) is None


def test_no_total_for_a_package_or_method_not_offered() -> None:
    assert summary(package_id="p99") is None
    assert summary(package_id="p10", method="bank") is None


def test_the_balance_after_adds_amount_and_bonus_not_the_fee() -> None:
    got = summary(package_id="p25", method="wallet", balance_minor=400)
    assert got is not None and got.balance_after_minor == 400 + 2500 + 150
    without = summary(package_id="p25")
    assert without is not None and without.balance_after_minor is None


def test_the_scripts_rounding_is_the_servers() -> None:
    """form.js computes the fee as (amount * rate + 5000) / 10000 in integers (BigInt): the same
    expression as shared.money.basis_points."""
    script = (Path(assets.STATIC_DIR) / "form.js").read_text()
    assert "(amount * rate + BigInt(5000)) / BigInt(10000)" in script
    for amount in range(0, 20_000, 7):
        for rate in (0, 1, 49, 50, 150, 200, 333, 10_000):
            assert basis_points(amount, rate) == (amount * rate + 5000) // 10000


# --- the methods' icons ----------------------------------------------------------------------------


def test_every_processors_method_has_an_icon_of_its_kind() -> None:
    """Each processor's package says what kind each of its methods is; the page draws each kind."""
    kinds = {
        (name, method): declared.kind
        for name, adapter in ADAPTERS.items()
        for method, declared in adapter.config_type.payment_methods.items()
    }
    assert {where: kind for where, kind in kinds.items() if kind not in ICON_KINDS} == {}
    assert {
        kinds[("stripe", "card")],
        kinds[("mollie", "ideal")],
        kinds[("mpesa", "mpesa")],
        kinds[("stripe", "pix")],
    } == {
        "card",
        "bank",
        "mobile_money",
        "qr",
    }
    assert (
        icon_kind("paypal", "wallet"),
        icon_kind("card"),
        icon_kind("bank_transfer"),
        icon_kind("x", "nonsense"),
    ) == (
        "wallet",
        "card",
        "bank",
        "payment",
    )
    assert set(METHOD_ICON_KINDS) <= {
        "card",
        "wallet",
        "bank",
        "bank_transfer",
        "netbanking",
        "mobile_money",
        "qr",
        "voucher",
        "cash",
    }


def test_an_unknown_method_gets_an_icon_by_its_shape_else_the_default() -> None:
    assert icon_kind("nz_direct_debit") == "bank"
    assert icon_kind("store_card") == "card"
    assert icon_kind("telco_wallet") == "wallet"
    assert icon_kind("something_new") == DEFAULT_KIND == "payment"
    assert assets.method_icon_url("something_new").startswith("/static/methods/payment.svg?v=")


def test_each_icon_is_a_small_monochrome_drawing_of_the_pages_own() -> None:
    for kind in ICON_KINDS:
        svg = (assets.STATIC_DIR / "methods" / f"{kind}.svg").read_text()
        assert len(svg.encode()) < 1024, kind
        assert assets.svg_problem(svg.encode()) is None, kind
        # One colour, drawn in strokes: no text, no embedded pictures, no brand's marks.
        assert set(re.findall(r"#[0-9a-fA-F]{3,6}\b", svg)) == {"#374151"}, kind
        for forbidden in ("<text", "<image", "href=", "<style", "<script"):
            assert forbidden not in svg, (kind, forbidden)


# --- branding: colours, logo, stylesheet -------------------------------------------------------------


def test_contrast_as_wcag_measures_it() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21)
    assert contrast_ratio("#fff", "#FFFFFF") == pytest.approx(1)
    assert contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert contrast_ratio("#0a7c3a", "#ffffff") == contrast_ratio("#ffffff", "#0a7c3a")
    assert normalise_hex("#AbC") == "#aabbcc"
    with pytest.raises(ValueError, match="not a hex colour"):
        normalise_hex("green")


@pytest.mark.parametrize("color", ["#4caf50", "#ffcc00", "#1e90ff", "#777777"])
def test_a_light_colour_is_refused_with_a_darker_one_that_passes(color: str) -> None:
    with pytest.raises(ValueError, match=r"contrast of \d\.\d\d:1; WCAG 2.2 AA needs 4.5:1") as info:
        check_contrast_with_white(color)
    suggested = re.findall(r"e\.g\. (#[0-9a-f]{6})", str(info.value))[0]
    assert suggested == darkened_for_contrast(color)
    assert 4.5 <= contrast_ratio(suggested, "#ffffff") < 4.8  # the lightest shade that passes
    assert check_contrast_with_white(suggested) == suggested


def test_colours_in_the_configuration(tmp_path: Path) -> None:
    settings = load(
        tmp_path, {"EVTOPUP__OPERATOR__PRIMARY_COLOR": "#0A7C3A", "EVTOPUP__OPERATOR__ACCENT_COLOR": "#036"}
    )
    assert (settings.operator.primary_color, settings.operator.accent_color) == ("#0a7c3a", "#003366")
    message = config_error(tmp_path, {"EVTOPUP__OPERATOR__PRIMARY_COLOR": "#4caf50"})
    assert message.startswith("operator.primary_color: #4caf50 against white text has a contrast of 2.78:1")
    assert "e.g. #3a853d" in message
    assert config_error(tmp_path, {"EVTOPUP__OPERATOR__ACCENT_COLOR": "blue"}).startswith("operator.accent_color:")


def test_the_brand_stylesheet_sets_only_the_configured_colours() -> None:
    assert assets.brand_css("#0a7c3a", "#003366") == ":root{--brand-primary:#0a7c3a;--brand-accent:#003366}\n"
    assert assets.brand_css(None, "#003366") == ":root{--brand-accent:#003366}\n"
    assert assets.brand_css(None, None) == ":root{}\n"
    page_css = (assets.STATIC_DIR / "page.css").read_text()
    assert "var(--brand-primary," in page_css and "var(--brand-accent," in page_css


def png(width: int = 2, height: int = 1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x0a\x7c\x3a" * width for _ in range(height)))
    return assets.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_logo_is_a_small_png_or_a_script_free_svg(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(png())
    logo = assets.read_logo(str(tmp_path / "logo.png"))
    assert (logo.content_type, logo.path) == ("image/png", "/static/brand/logo")
    assert logo.url == f"/static/brand/logo?v={logo.version}"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4"/></svg>'
    (tmp_path / "logo.svg").write_bytes(svg)
    logo = assets.read_logo(str(tmp_path / "logo.svg"))
    assert logo.content_type == "image/svg+xml" and "sandbox" in logo.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "may not hold <script>"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "event handlers (onload)"),
        (b"<?xml version='1.0'?><!DOCTYPE svg [<!ENTITY a 'b'>]><svg/>", "DOCTYPE"),
        (b"<html><body/></html>", "root element must be <svg>, not <html>"),
        (b"GIF89a\x01\x00\x01\x00", "neither a PNG nor a well-formed SVG"),
        (b"\xff\xd8\xff\xe0 jpeg", "neither a PNG nor an SVG"),
    ],
)
def test_a_logo_that_is_not_a_safe_image_stops_the_start(tmp_path: Path, body: bytes, problem: str) -> None:
    (tmp_path / "logo.svg").write_bytes(body)
    with pytest.raises(ConfigError, match=re.escape(problem)) as info:
        assets.read_logo(str(tmp_path / "logo.svg"))
    assert str(info.value).startswith("operator.logo_path: ")


def test_a_logo_too_large_or_missing_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(png() + b"\x00" * assets.MAX_LOGO_BYTES)
    with pytest.raises(ConfigError, match=r"operator.logo_path: \d+ bytes; at most 32768"):
        assets.read_logo(str(tmp_path / "big.png"))
    with pytest.raises(ConfigError, match=re.escape("operator.logo_path: cannot read")):
        assets.read_logo(str(tmp_path / "missing.png"))


def test_the_settings_take_only_an_svg_or_png_logo(tmp_path: Path) -> None:
    # Only the kind here: every service reads the settings; the page reads the file when it starts.
    assert (
        load(tmp_path, {"EVTOPUP__OPERATOR__LOGO_PATH": "/nowhere/logo.SVG"}).operator.logo_path == "/nowhere/logo.SVG"
    )
    message = config_error(tmp_path, {"EVTOPUP__OPERATOR__LOGO_PATH": "/srv/logo.gif"})
    assert message == "operator.logo_path: must name a .png or .svg file"


# --- the terms ------------------------------------------------------------------------------------------


def test_the_terms_in_the_configuration(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "EVTOPUP__OPERATOR__TERMS_URL": "https://cpo.example.com/terms",
            "EVTOPUP__OPERATOR__TERMS_VERSION": "2024-06",
        },
    )
    assert (settings.operator.terms_url, settings.operator.terms_version) == (
        "https://cpo.example.com/terms",
        "2024-06",
    )
    assert load(tmp_path).operator.terms_url is None
    message = config_error(tmp_path, {"EVTOPUP__OPERATOR__TERMS_VERSION": "3"})
    assert message.startswith("operator: terms_version is set without terms_url")
    message = config_error(tmp_path, {"EVTOPUP__OPERATOR__TERMS_URL": "http://cpo.example.com/terms"})
    assert "terms_url must be https" in message
    assert config_error(tmp_path, {"EVTOPUP__OPERATOR__TERMS_URL": "javascript:alert(1)"}).startswith(
        "operator.terms_url:"
    )


def test_the_terms_sentence_around_its_link() -> None:
    t = Translator("en")
    assert topup_form.terms_sentence(t, "2024-06") == ("By continuing you accept the ", " (version 2024-06).")
    assert topup_form.terms_sentence(t, None) == ("By continuing you accept the ", ".")


def test_an_error_points_at_what_it_is_about() -> None:
    assert [topup_form.error_target(f) for f in ("amount_minor", "package_id", "method", "phone", None, "x")] == [
        "amount",
        "packages",
        "methods",
        "phone",
        None,
        None,
    ]


# --- the balance before paying -------------------------------------------------------------------------


def test_the_balance_from_the_lookup_only_when_it_is_about_this_user_in_this_currency() -> None:
    reply = {"user_id": "u1", "exists": True, "locale": None, "balance_minor": 1234, "currency": "EUR"}
    assert topup_form.balance_from_lookup("u1", reply, "EUR") == 1234
    assert topup_form.balance_from_lookup("u2", reply, "EUR") is None
    assert topup_form.balance_from_lookup("u1", reply, "BGN") is None
    for broken in ({"balance_minor": None}, {"balance_minor": True}, {"balance_minor": 1.5}, {"exists": False}):
        assert topup_form.balance_from_lookup("u1", reply | broken, "EUR") is None
    assert topup_form.balance_from_lookup("u1", {"user_id": "u1", "exists": True, "locale": "en"}, "EUR") is None


class FakeCsms:
    kind = "ampeco"

    def __init__(self, balance: Decimal | None) -> None:
        self.balance = balance

    async def read_user(self, user_id: str) -> CsmsUser:
        if user_id == "404":
            raise UnknownUser(user_id)
        return CsmsUser(user_id=user_id, locale="de", balance=self.balance)


class FakePool:
    """What ``store.balance`` asks of the pool: one value."""

    def __init__(self, balances: dict[tuple[str, str], int]) -> None:
        self.balances = balances

    async def fetchval(self, _query: str, user_id: str, _currency: str, environment: str) -> int | None:
        return self.balances.get((user_id, environment))


async def ask(settings: Settings, request: dict[str, Any], csms_balance: Decimal | None = Decimal("7.50")) -> Any:
    pool = FakePool({("7", "test"): 900, ("5", "production"): 300})
    handler = user_lookup_handler(FakeCsms(csms_balance), settings, pool)  # type: ignore[arg-type]
    return await handler(request)


async def test_crediting_tells_the_balance_only_when_asked_and_only_for_signed_launches(tmp_path: Path) -> None:
    signed = load(tmp_path)  # the built-in ledger: its balances
    assert await ask(signed, {"user_id": "5"}) == {"user_id": "5", "exists": True, "locale": "de"}
    assert await ask(signed, {"user_id": "5", "balance": True}) == {
        "user_id": "5",
        "exists": True,
        "locale": "de",
        "balance_minor": 300,
        "currency": "EUR",
    }
    assert (await ask(signed, {"user_id": "5", "balance": "yes"})).get("balance_minor") is None
    # An open launch is a user id anyone can type: never a balance, whatever the request asks.
    opened = signed.model_copy(update={"launch": signed.launch.model_copy(update={"mode": "open"})})
    assert "balance_minor" not in await ask(opened, {"user_id": "5", "balance": True})


async def test_with_ampeco_the_balance_is_ampecos_and_test_money_the_ledgers(tmp_path: Path) -> None:
    tester = TEST_INTEGRATION.replace('test_users = ["tester-1", "tester-2"]', 'test_users = ["7"]')
    settings = load(tmp_path, TEST_INTEGRATION_SECRETS, DEMO_TOML + tester)
    ampeco = settings.model_copy(update={"csms": settings.csms.model_copy(update={"kind": "ampeco"})})
    assert (await ask(ampeco, {"user_id": "5", "balance": True}))["balance_minor"] == 750
    # Not a whole number of cents, or not disclosed: no balance rather than a wrong one.
    assert (await ask(ampeco, {"user_id": "5", "balance": True}, Decimal("7.505")))["balance_minor"] is None
    assert (await ask(ampeco, {"user_id": "5", "balance": True}, None))["balance_minor"] is None
    # A tester of a test integration pays test money: its balance is the ledger's test account.
    assert (await ask(ampeco, {"user_id": "7", "balance": True}))["balance_minor"] == 900
    assert await ask(ampeco, {"user_id": "404", "balance": True}) == {"user_id": "404", "exists": False, "locale": None}


def test_the_scripts_money_samples_put_every_digit_in_a_known_place() -> None:
    assert topup_form.money_samples(Translator("en"), "EUR") == ("€1,234,567.89", "€1,234.00")
    assert topup_form.money_samples(Translator("en"), "JPY") == ("¥1,234,567", "¥1,234")
    assert topup_form.money_samples(Translator("en"), "KWD") == ("KWD1,234,567.891", "KWD1,234.000")
    assert topup_form.money_samples(Translator("hi"), "INR") == ("₹12,34,567.89", "₹1,234.00")


class SlowOrBrokenRpc:
    def __init__(self, outcome: BaseException | dict[str, Any] | None) -> None:
        self.outcome = outcome
        self.requests: list[dict[str, Any]] = []

    async def call(self, _queue: str, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if self.outcome is None:
            await asyncio.sleep(30)  # crediting does not answer
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert isinstance(self.outcome, dict)
        return self.outcome


@pytest.mark.parametrize(
    "outcome", [None, RpcTimeout("no reply"), RpcError("csms_unavailable", "down"), RpcError("no_server", "x")]
)
async def test_the_form_never_waits_long_for_the_balance(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> None:
    monkeypatch.setattr(service, "BALANCE_TIMEOUT_S", 0.05)
    rpc = SlowOrBrokenRpc(outcome)
    started = asyncio.get_running_loop().time()
    assert await service.balance_before(rpc, "u1", "EUR") is None  # type: ignore[arg-type]
    assert asyncio.get_running_loop().time() - started < 1
    assert rpc.requests == [{"user_id": "u1", "balance": True}]


async def test_the_form_takes_the_balance_crediting_tells() -> None:
    reply = {"user_id": "u1", "exists": True, "locale": None, "balance_minor": 4200, "currency": "EUR"}
    assert await service.balance_before(SlowOrBrokenRpc(reply), "u1", "EUR") == 4200  # type: ignore[arg-type]
