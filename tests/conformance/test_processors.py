"""The contract every real processor keeps, run against each adapter with its simulator, through the
whole system: a stack of the three services whose one production integration is that processor
(``CASES``), the simulator standing in for the processor (``tests/simulators/processor.py``).

A new processor adds its simulator to ``CASES``; these tests then hold it to the same rules:
create → pay → webhook → credited, once, however often and in whatever order webhooks come; decline;
expiry; a lost webhook healed by polling; refunds (full and partial) and disputes (lost, won, and a
chargeback after the driver spent the money) moving the ledger once each; forged, re-signed,
re-serialised and replayed webhooks changing nothing; a create that fails or times out never charging
twice, and the driver able to try again."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp
import pytest
import pytest_asyncio

from services.payments.processors import ADAPTERS
from services.payments.processors.base import (
    AnyAdapter,
    Checkout,
    InvalidSignature,
    PhonePrompt,
    Redirect,
    WebhookAuth,
    WebhookRequest,
)
from tests.harness import (
    REPO,
    Driver,
    Integrations,
    Stack,
    eventually,
    fetch,
    own_stack,
    services_running,
    superuser_dsn,
)
from tests.simulators.adyen_sim import AdyenSimulator
from tests.simulators.mercadopago_sim import MercadoPagoSimulator
from tests.simulators.mollie_sim import MollieSimulator
from tests.simulators.mpesa import MpesaSimulator
from tests.simulators.paypal import PayPalSimulator
from tests.simulators.paystack_sim import PaystackSimulator
from tests.simulators.processor import ProcessorSimulator, WebhookFaults
from tests.simulators.razorpay_sim import RazorpaySimulator
from tests.simulators.stripe_sim import StripeSimulator
from tests.simulators.xendit_sim import XenditSimulator

pytestmark = [pytest.mark.e2e]

PACKAGE = {"package_id": "p25"}
AMOUNT, BONUS = 2500, 150  # the package: charged 2500 (no fee on these methods), credited 2650


@dataclass(frozen=True)
class Case:
    simulator: Callable[[], ProcessorSimulator]
    currency: str
    method: str
    # What the driver gives the page for a processor that prompts the phone.
    phone: str | None = None
    # Daraja is reported to refuse callback URLs naming M-Pesa: its integration id must not.
    integration_id: str | None = None


CASES: dict[str, Case] = {
    "adyen": Case(lambda: AdyenSimulator(live=True), "EUR", "card"),
    "mercadopago": Case(MercadoPagoSimulator, "BRL", "card"),
    "mollie": Case(MollieSimulator, "EUR", "ideal"),
    "mpesa": Case(MpesaSimulator, "KES", "mpesa", phone="254712345678", integration_id="lipa_main"),
    "paypal": Case(PayPalSimulator, "EUR", "paypal"),
    "paystack": Case(PaystackSimulator, "NGN", "card"),
    "razorpay": Case(RazorpaySimulator, "INR", "upi"),
    "stripe": Case(StripeSimulator, "EUR", "card"),
    "xendit": Case(XenditSimulator, "PHP", "gcash"),
}


def test_every_real_processor_has_a_conformance_case() -> None:
    """The sandbox (the demo's own processor, served by payments itself) is held to the same webhook
    rules by ``test_sandbox_adapter.py``; every other registered processor must be here."""
    assert set(ADAPTERS) - {"sandbox"} == set(CASES)


@dataclass
class Subject:
    name: str
    case: Case
    simulator: ProcessorSimulator
    stack: Stack
    adapter: AnyAdapter
    driver: Driver
    integration_id: str
    users: list[str] = field(default_factory=list)

    @property
    def capabilities(self) -> Any:
        return self.adapter.capabilities

    def new_user(self) -> str:
        user = f"{self.name}-{len(self.users) + 1}-{uuid.uuid4().hex[:6]}"
        self.users.append(user)
        return user

    def body(self, **more: Any) -> dict[str, Any]:
        body: dict[str, Any] = {**PACKAGE, "method": self.case.method, **more}
        if self.case.phone:
            body.setdefault("phone", self.case.phone)
        return body

    async def top_up(self, user: str, key: str | None = None) -> tuple[str, Checkout]:
        status, body = await self.driver.create_topup(user, self.body(), key)
        assert status in (200, 201), body
        return body["id"], await self.checkout_of(body["id"])

    async def checkout_of(self, order_id: str) -> Checkout:
        [row] = await fetch(
            superuser_dsn(self.stack, "payments"),
            "SELECT processor_reference, redirect_url FROM payments WHERE order_id = $1",
            uuid.UUID(order_id),
        )
        assert row["processor_reference"], "the payment has no processor reference"
        step = Redirect(row["redirect_url"]) if row["redirect_url"] else PhonePrompt("")
        return Checkout(row["processor_reference"], step)

    async def paid(self, user: str) -> tuple[str, Checkout]:
        order_id, checkout = await self.top_up(user)
        await self.simulator.act(checkout, "succeeded")
        await self.driver.wait_status(user, order_id, "credited", timeout_s=60)
        return order_id, checkout

    async def balance(self, user: str) -> int:
        return await self.driver.balance(user)

    async def balance_becomes(self, user: str, expected: int, timeout_s: float = 60) -> None:
        async def check() -> bool | None:
            return True if await self.balance(user) == expected else None

        try:
            await eventually(check, timeout_s, "")
        except AssertionError:
            raise AssertionError(f"balance of {user} is {await self.balance(user)}, expected {expected}") from None

    async def transfers(self, order_id: str) -> list[str]:
        rows = await fetch(
            superuser_dsn(self.stack, "crediting"),
            "SELECT kind FROM transfers WHERE order_id = $1 ORDER BY created_at",
            uuid.UUID(order_id),
        )
        return [row["kind"] for row in rows]

    async def cli(self, *args: str) -> tuple[int, str]:
        env = {**os.environ, **self.stack.env}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "--config",
            str(self.stack.config_path),
            *args,
            env=env,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return process.returncode or 0, out.decode()


def integration_toml(name: str, integration_id: str, case: Case, simulator: ProcessorSimulator) -> str:
    table = {
        "processor": name,
        "environment": "production",
        "methods": [case.method],
        "api_base_url": simulator.base_url,
        **simulator.settings(),
    }
    assert table["environment"] == "production", "the stack's one integration takes production money"
    return f"[integrations.{integration_id}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


@pytest_asyncio.fixture(scope="module", params=sorted(CASES))
async def processor_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Subject]:
    name = request.param
    case = CASES[name]
    simulator = case.simulator()
    await simulator.start()
    integration_id = case.integration_id or f"{name}_main"
    integrations = Integrations(
        toml=integration_toml(name, integration_id, case, simulator),
        secrets={
            f"EVTOPUP__INTEGRATIONS__{integration_id.upper()}__{key.upper()}": value
            for key, value in simulator.secrets().items()
        },
        currency=case.currency,
    )
    try:
        async with own_stack(tmp_path_factory.mktemp(name), integrations=integrations) as stack:
            simulator.webhook_url = stack.url("payments", f"/webhooks/{integration_id}")
            async with services_running(stack), aiohttp.ClientSession() as http:
                settings = stack.settings.integrations[integration_id]
                adapter = ADAPTERS[name](integration_id, settings, stack.settings.services, http)
                yield Subject(name, case, simulator, stack, adapter, Driver(stack, http), integration_id)
    finally:
        await simulator.close()


@pytest.fixture
def subject(processor_stack: Subject) -> Subject:
    """The processor's stack, its simulator delivering every webhook once, at once."""
    processor_stack.simulator.faults = WebhookFaults()
    return processor_stack


# --- paying ---------------------------------------------------------------------------------------


async def test_paid_top_up_is_credited_once_though_each_webhook_comes_three_times(subject: Subject) -> None:
    subject.simulator.faults = WebhookFaults(copies=3)
    user = subject.new_user()
    order_id, _ = await subject.paid(user)
    await asyncio.sleep(2)  # the copies (and any retries) have all arrived
    assert await subject.balance(user) == AMOUNT + BONUS
    assert await subject.transfers(order_id) == ["topup"]


async def test_a_declined_payment_fails_and_credits_nothing(subject: Subject) -> None:
    user = subject.new_user()
    order_id, checkout = await subject.top_up(user)
    await subject.simulator.act(checkout, "declined")
    await subject.driver.wait_status(user, order_id, "failed", timeout_s=60)
    assert await subject.balance(user) == 0
    assert await subject.transfers(order_id) == []


async def test_an_expired_checkout_ends_the_order_without_credit(subject: Subject) -> None:
    user = subject.new_user()
    order_id, checkout = await subject.top_up(user)
    await subject.simulator.act(checkout, "expired")

    async def ended() -> str | None:
        _, body = await subject.driver.get_topup(user, order_id)
        return body["status"] if body["status"] in ("expired", "failed") else None

    await eventually(ended, 60, "the order never ended")
    assert await subject.transfers(order_id) == []


async def test_a_lost_webhook_is_healed_by_polling(subject: Subject) -> None:
    subject.simulator.faults = WebhookFaults(drop=True)
    user = subject.new_user()
    order_id, checkout = await subject.top_up(user)
    await subject.simulator.act(checkout, "succeeded")
    await subject.driver.wait_status(user, order_id, "credited", timeout_s=60)
    assert await subject.balance(user) == AMOUNT + BONUS


async def test_webhooks_out_of_order_and_repeated_settle_the_same(subject: Subject) -> None:
    """Held, then delivered newest first and twice each: the payment is credited once; a dispute's
    outcome arriving before its opening takes the money back once, and the late opening nothing."""
    subject.simulator.faults = WebhookFaults(copies=2, hold=True)
    user = subject.new_user()
    order_id, checkout = await subject.top_up(user)
    await subject.simulator.act(checkout, "succeeded")
    await subject.simulator.release()
    await subject.driver.wait_status(user, order_id, "credited", timeout_s=60)
    disputes = subject.capabilities.disputes
    if disputes:
        dispute = await subject.simulator.open_dispute(checkout.processor_reference, AMOUNT)
        await subject.simulator.settle_dispute(dispute, won=False)
    await subject.simulator.release()
    expected = 0 if disputes else AMOUNT + BONUS
    await subject.balance_becomes(user, expected)
    await asyncio.sleep(2)
    assert await subject.balance(user) == expected
    assert await subject.transfers(order_id) == (["topup", "dispute"] if disputes else ["topup"])


# --- refunds --------------------------------------------------------------------------------------


async def test_partial_refunds_each_debit_once_and_a_full_refund_empties_the_top_up(subject: Subject) -> None:
    user = subject.new_user()
    order_id, _ = await subject.paid(user)
    if not subject.capabilities.refunds:
        code, out = await subject.cli("refund", order_id, "--by", "ops", "--why", "driver asked")
        assert code == 2 and "cannot be refunded" in out, out
        assert await subject.balance(user) == AMOUNT + BONUS
        return
    subject.simulator.faults = WebhookFaults(copies=2)
    # 1000 of 2500 charged: 1000 paid and 60 of the 150 bonus come off; then 500 (500 + 30); then the rest.
    for amount, balance in ((1000, 1590), (500, 1060), (None, 0)):
        args = ["--amount", str(amount)] if amount else []
        code, out = await subject.cli("refund", order_id, *args, "--by", "ops", "--why", "driver asked")
        assert code == 0, out
        await subject.balance_becomes(user, balance)
    await asyncio.sleep(2)
    assert await subject.balance(user) == 0
    assert await subject.transfers(order_id) == ["topup", "refund", "refund", "refund"]
    code, out = await subject.cli("refund", order_id, "--by", "ops", "--why", "again")
    assert code == 2 and "is left to refund" in out, out


# --- disputes -------------------------------------------------------------------------------------


async def test_a_lost_dispute_debits_and_a_won_one_gives_back(subject: Subject) -> None:
    if not subject.capabilities.disputes:
        # The processor has no disputes (the simulator says so too): nothing can take the money back.
        with pytest.raises(NotImplementedError):
            await subject.simulator.open_dispute("any", AMOUNT)
        return
    lost_user, won_user = subject.new_user(), subject.new_user()
    _, lost = await subject.paid(lost_user)
    _, won = await subject.paid(won_user)
    lost_dispute = await subject.simulator.open_dispute(lost.processor_reference, AMOUNT)
    won_dispute = await subject.simulator.open_dispute(won.processor_reference, AMOUNT)
    await subject.balance_becomes(lost_user, 0)
    await subject.balance_becomes(won_user, 0)
    await subject.simulator.settle_dispute(lost_dispute, won=False)
    await subject.simulator.settle_dispute(won_dispute, won=True)
    await subject.balance_becomes(won_user, AMOUNT + BONUS)
    await asyncio.sleep(2)
    assert await subject.balance(lost_user) == 0


async def test_a_chargeback_after_spending_leaves_a_receivable_not_a_negative_balance(subject: Subject) -> None:
    user = subject.new_user()
    order_id, checkout = await subject.paid(user)
    code, out = await subject.cli("adjust", "--user", user, "--amount", "-2000", "--reason", "charging", "--by", "t")
    assert code == 0, out
    if not subject.capabilities.disputes:
        assert await subject.balance(user) == AMOUNT + BONUS - 2000
        return
    await subject.simulator.open_dispute(checkout.processor_reference, AMOUNT)
    await subject.balance_becomes(user, 0)
    code, out = await subject.cli("receivables")
    assert code == 0, out
    owed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(o["user_id"], o["owed_minor"]) for o in owed if o["user_id"] == user] == [(user, 2000)]
    assert "dispute" in await subject.transfers(order_id)


# --- webhooks that must change nothing --------------------------------------------------------------


async def _held_payment(subject: Subject) -> Checkout:
    """A payment the processor holds as paid, unknown to the stack (its webhooks are not sent)."""
    subject.simulator.faults = WebhookFaults(drop=True)
    checkout = await subject.adapter.create_checkout(checkout_request(subject, uuid.uuid4()))
    await subject.simulator.act(checkout, "succeeded")
    return checkout


def checkout_request(subject: Subject, payment_id: uuid.UUID) -> Any:
    from services.payments.processors.base import CheckoutRequest

    return CheckoutRequest(
        payment_id=payment_id,
        order_id=uuid.uuid4(),
        reference=str(payment_id),
        amount_minor=AMOUNT,
        currency=subject.case.currency,
        method=subject.case.method,
        return_url="http://127.0.0.1/return",
        webhook_url=subject.simulator.webhook_url or "http://127.0.0.1/webhook",
        description="conformance",
        phone=subject.case.phone,
    )


def reserialised(webhook: WebhookRequest) -> WebhookRequest:
    """The same fields in other bytes: JSON indented, a form (Mollie's ``id=tr_…``) percent-encoded."""
    try:
        body = json.dumps(json.loads(webhook.body), indent=2, ensure_ascii=False).encode()
    except ValueError:
        pairs = parse_qsl(webhook.body.decode(), keep_blank_values=True, strict_parsing=True)
        body = "&".join(f"{quote(k, safe='')}={''.join(f'%{b:02X}' for b in v.encode())}" for k, v in pairs).encode()
    return replace(webhook, body=body)


async def test_a_genuine_webhook_verifies(subject: Subject) -> None:
    checkout = await _held_payment(subject)
    webhook = subject.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    await subject.adapter.verify_webhook(webhook)
    events = await subject.adapter.parse_webhook(webhook)
    assert [e.kind.value for e in events] == ["succeeded"]
    # In minor units, or (a processor that vouches for no amount) none: payments takes what it asked for.
    expected = (AMOUNT, subject.case.currency) if subject.capabilities.states_amount else (None, subject.case.currency)
    assert [(e.amount_minor, e.currency) for e in events] == [expected]


async def test_a_webhook_signed_with_another_secret_is_refused(subject: Subject) -> None:
    checkout = await _held_payment(subject)
    forged = subject.simulator.with_other_secret().signed_webhook(checkout.processor_reference, "declined")
    with pytest.raises(InvalidSignature):
        await subject.adapter.verify_webhook(forged)


async def test_a_tampered_body_is_refused_or_means_nothing_new(subject: Subject) -> None:
    checkout = await _held_payment(subject)
    genuine = subject.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    tampered = replace(genuine, body=_change_amount(genuine.body))
    if subject.capabilities.webhook_auth in (WebhookAuth.BODY_HMAC, WebhookAuth.VERIFICATION_API):
        with pytest.raises(InvalidSignature):
            await subject.adapter.verify_webhook(tampered)
        return
    # Signed over fields (Adyen: the amount is one of them) it is refused; not signed, or signed over
    # the query and headers only (M-Pesa, Mollie, Mercado Pago: the processor's API states the
    # outcome), the body's amount is not taken at all: the same events as the genuine one.
    try:
        await subject.adapter.verify_webhook(tampered)
    except InvalidSignature:
        return
    assert await subject.adapter.parse_webhook(tampered) == await subject.adapter.parse_webhook(genuine)


async def test_a_reserialised_body_is_refused_where_the_bytes_are_signed(subject: Subject) -> None:
    checkout = await _held_payment(subject)
    genuine = subject.simulator.signed_webhook(checkout.processor_reference, "succeeded")
    other = reserialised(genuine)
    assert other.body != genuine.body
    if subject.capabilities.webhook_auth in (WebhookAuth.BODY_HMAC, WebhookAuth.VERIFICATION_API):
        with pytest.raises(InvalidSignature):
            await subject.adapter.verify_webhook(other)
        return
    # Signed over fields (Adyen) or not signed at all (M-Pesa): the same fields mean the same events.
    await subject.adapter.verify_webhook(other)
    assert await subject.adapter.parse_webhook(other) == await subject.adapter.parse_webhook(genuine)


async def test_a_replay_older_than_the_tolerance_is_refused(subject: Subject) -> None:
    window = subject.capabilities.replay_window_s
    checkout = await _held_payment(subject)
    if window is None:
        # No signed time: a replay, however late, is the same event again, which its id deduplicates.
        webhook = subject.simulator.signed_webhook(checkout.processor_reference, "succeeded")
        late = replace(webhook, received_at_s=webhook.received_at_s + 7 * 86400)
        await subject.adapter.verify_webhook(late)
        ids = [e.event_id for e in await subject.adapter.parse_webhook(webhook)]
        assert ids and ids == [e.event_id for e in await subject.adapter.parse_webhook(late)]
        return
    stale = subject.simulator.signed_webhook(checkout.processor_reference, "succeeded", age_s=window + 60)
    with pytest.raises(InvalidSignature):
        await subject.adapter.verify_webhook(stale)


async def test_a_forged_webhook_sent_to_payments_changes_nothing(subject: Subject) -> None:
    user = subject.new_user()
    order_id, checkout = await subject.top_up(user)
    forged = subject.simulator.with_other_secret().signed_webhook(checkout.processor_reference, "succeeded")
    url = subject.stack.url("payments", f"/webhooks/{subject.integration_id}")
    async with subject.driver.http.post(
        url, data=forged.body, headers=dict(forged.headers), params=dict(forged.query)
    ) as response:
        assert response.status == 401, await response.text()
    await asyncio.sleep(1)
    _, body = await subject.driver.get_topup(user, order_id)
    assert body["status"] == "pending"
    rows = await fetch(
        superuser_dsn(subject.stack, "payments"),
        "SELECT count(*) AS n FROM processor_events WHERE processor_reference = $1",
        checkout.processor_reference,
    )
    assert rows[0]["n"] == 0


def _change_amount(body: bytes) -> bytes:
    """The same body with its first amount-like value raised by one unit of the processor's notation;
    a body that states no amount (Mercado Pago's, Mollie's form ``id=…``) is given one."""
    try:
        data = json.loads(body)
    except ValueError:
        return body + b"&amount=1.00"
    if not _bump_first_amount(data):
        data["amount"] = 1
    return json.dumps(data, separators=(",", ":")).encode()


AMOUNT_KEYS = ("amount", "value", "unit_amount", "amount_total", "Amount")


def _bump_first_amount(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("Name") == "Amount" and isinstance(node.get("Value"), int | float):
            node["Value"] = node["Value"] + 1
            return True
        for key in AMOUNT_KEYS:
            value = node.get(key)
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                node[key] = value + 1
                return True
            if isinstance(value, str) and value.replace(".", "", 1).isdigit():
                node[key] = str(int(value.split(".")[0]) + 1) + (("." + value.split(".")[1]) if "." in value else "")
                return True
        return any(_bump_first_amount(child) for child in node.values())
    if isinstance(node, list):
        return any(_bump_first_amount(child) for child in node)
    return False


# --- creating ---------------------------------------------------------------------------------------


async def test_a_create_that_fails_before_reaching_the_processor_can_be_retried(subject: Subject) -> None:
    user = subject.new_user()
    key = str(uuid.uuid4())
    before = subject.simulator.created_payments()
    subject.simulator.fail_next_create("error_500")
    status, body = await subject.driver.create_topup(user, subject.body(), key)
    assert status == 503, body
    status, body = await subject.driver.create_topup(user, subject.body(), key)
    if subject.capabilities.create_is_idempotent:
        assert status in (200, 201), body
        assert subject.simulator.created_payments() == before + 1
        return
    # Without idempotency, a failed create may have reached the processor: never sent again.
    assert status == 409 and body.get("code") == "checkout_uncertain", body
    assert subject.simulator.created_payments() == before
    status, body = await subject.driver.create_topup(user, subject.body())
    assert status in (200, 201), body
    assert subject.simulator.created_payments() == before + 1


async def test_a_create_whose_answer_is_lost_never_charges_twice(subject: Subject) -> None:
    user = subject.new_user()
    key = str(uuid.uuid4())
    before = subject.simulator.created_payments()
    subject.simulator.fail_next_create("timeout_after_create")
    status, body = await subject.driver.create_topup(user, subject.body(), key)
    assert status == 503, body
    started = time.monotonic()

    async def retried() -> tuple[int, dict[str, Any]] | None:
        status, body = await subject.driver.create_topup(user, subject.body(), key)
        return (status, body) if status != 503 else None

    status, body = await eventually(retried, 60, "the retried top-up never got past 503")
    assert time.monotonic() - started < 60
    if subject.capabilities.create_is_idempotent:
        assert status in (200, 201), body
        # The processor saw the same request again and returned the checkout it had made.
        assert subject.simulator.created_payments() == before + 1
        order_id, checkout = body["id"], await subject.checkout_of(body["id"])
        await subject.simulator.act(checkout, "succeeded")
        await subject.driver.wait_status(user, order_id, "credited", timeout_s=60)
        assert await subject.balance(user) == AMOUNT + BONUS
        return
    assert status == 409 and body.get("code") == "checkout_uncertain", body
    assert subject.simulator.created_payments() == before + 1
    order_id, checkout = await subject.top_up(user)
    assert subject.simulator.created_payments() == before + 2
    await subject.simulator.act(checkout, "succeeded")
    await subject.driver.wait_status(user, order_id, "credited", timeout_s=60)
    assert await subject.balance(user) == AMOUNT + BONUS
