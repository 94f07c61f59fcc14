"""The driver's history and receipts without I/O (services/page/receipts.py, pdf.py): the history's
pages and cursors, times in the driver's language at the operator's timezone, what a receipt says
for each outcome, the operator's details, and the receipt as a PDF in every script the page speaks,
read back from the PDF."""

from __future__ import annotations

import io
import re
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from services.page import history, pdf, receipts, store
from services.page.domain import OrderStatus
from services.page.i18n import Translator
from services.page.receipts import BadCursor, decode_cursor, encode_cursor, page_of
from shared.settings import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "EVTOPUP__LAUNCH__SECRET": "launch-secret-0123456789abcdefghijklmnop",
    "EVTOPUP__CREDITING__API_TOKEN": "crediting-token-value",
    "EVTOPUP__AMQP__PASSWORD": "amqp-password-value",
    "EVTOPUP__AMQP__PAGE_PASSWORD": "amqp-page-password",
    "EVTOPUP__AMQP__PAYMENTS_PASSWORD": "amqp-payments-password",
    "EVTOPUP__AMQP__CREDITING_PASSWORD": "amqp-crediting-password",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY": "sandbox-api-key-value",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET": "sandbox-webhook-secret-value",
}
OPERATOR = {
    "EVTOPUP__OPERATOR__LEGAL_NAME": "Demo Charging Ltd.",
    "EVTOPUP__OPERATOR__ADDRESS": "1 Charge Street\n\n  Sofia 1000  ",
    "EVTOPUP__OPERATOR__VAT_ID": "BG123456789",
    "EVTOPUP__OPERATOR__SUPPORT_EMAIL": "help@demo.example",
    "EVTOPUP__OPERATOR__TIMEZONE": "Europe/Sofia",
    "EVTOPUP__OPERATOR__LOCALES": '["en", "bg", "ar", "th", "hi", "he"]',
}
CREATED = datetime(2026, 1, 5, 13, 4, 5, 123456, tzinfo=UTC)
PAID = CREATED + timedelta(minutes=1)


def settings(**env: str) -> Settings:
    return load_settings(REPO / "config" / "demo.toml", {**SECRETS, **env})


def order(**overrides: Any) -> store.Order:
    fields: dict[str, Any] = {
        "id": uuid.UUID("3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"),
        "user_id": "driver-1234567",
        "request_hash": "hash",
        "package_id": "p25",
        "amount_minor": 2500,
        "bonus_minor": 100,
        "fee_minor": 58,
        "currency": "EUR",
        "method": "wallet",
        "integration_id": "sandbox_demo",
        "status": OrderStatus.CREDITED,
        "redirect_url": "https://pay.example/x",
        "balance_minor": 9000,
        "correlation_id": "c",
        "payment_id": uuid.uuid4(),
        "created_at": CREATED,
        "paid_at": PAID,
        "processor_reference": "sbx_ref_9f8e7d6c",
    }
    fields.update(overrides)
    return store.Order(**fields)


# --- the history's pages -------------------------------------------------------------------------------


def test_a_cursor_names_the_top_up_after_which_the_next_page_starts() -> None:
    top_up = order()
    cursor = encode_cursor(top_up)
    assert re.fullmatch(r"[0-9]+_[0-9a-f-]{36}", cursor)
    assert decode_cursor(cursor) == (CREATED, top_up.id)  # to the microsecond


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "1_2",
        "-5_3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
        "9" * 18 + "_3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
        "12_3F2A9C1E-5B6D-4E7F-8A9B-0C1D2E3F4A5B",
        "12_3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b\n",
        "12 _x",
    ],
)
def test_a_cursor_the_page_did_not_make_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def test_a_page_holds_twenty_and_says_whether_older_ones_follow() -> None:
    rows = [order(id=uuid.uuid4(), created_at=CREATED - timedelta(minutes=i)) for i in range(21)]
    shown, cursor = page_of(rows)
    assert shown == rows[:20] and receipts.PAGE_SIZE == 20
    assert cursor == encode_cursor(rows[19])
    assert page_of(rows[:20]) == (rows[:20], None)  # exactly a page: no "more"
    assert page_of([]) == ([], None)
    assert page_of(rows[:3], size=2) == (rows[:2], encode_cursor(rows[1]))


def test_a_history_entry_is_in_the_drivers_language_at_the_operators_time() -> None:
    entry = receipts.history_entry(order(), Translator("en"), "Europe/Sofia")
    assert entry.time == "Jan 5, 2026, 3:04\u202fPM"  # 13:04 UTC is 15:04 in Sofia in January
    assert (entry.amount, entry.bonus, entry.status, entry.status_label) == ("€25.00", "€1.00", "credited", "Credited")
    assert entry.time_iso == CREATED.isoformat()
    bulgarian = receipts.history_entry(order(bonus_minor=0, status=OrderStatus.FAILED), Translator("bg"), "UTC")
    assert bulgarian.time == "5.01.2026\u202f\u0433., 13:04"  # Cyrillic "g.": the year
    assert bulgarian.amount == "25,00\xa0€" and bulgarian.bonus is None
    assert bulgarian.status_label == Translator("bg")("status_label_failed")


def test_each_status_has_a_short_label() -> None:
    t = Translator("en")
    labels = {status: t(f"status_label_{status.value}") for status in OrderStatus}
    assert all(len(label) <= 15 for label in labels.values()), labels
    assert len(set(labels.values())) == len(OrderStatus)


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("en", "January 5, 2026, 3:04:05\u202fPM +0200"), ("de", "5. Januar 2026, 15:04:05 OEZ")],
)
def test_a_receipts_time_has_seconds_and_the_offset(locale: str, expected: str) -> None:
    assert Translator(locale).datetime(CREATED, "Europe/Sofia", detailed=True) == expected
    in_utc = "January 5, 2026, 1:04:05" if locale == "en" else "5. Januar 2026, 13:04:05"
    assert Translator(locale).datetime(CREATED, detailed=True).startswith(in_utc)


# --- what a receipt says -------------------------------------------------------------------------------


def rows(receipt: receipts.Receipt) -> dict[str, str]:
    return {row.id: row.value for row in receipt.rows}


def test_a_credited_top_ups_receipt() -> None:
    t = Translator("en")
    receipt = receipts.receipt(order(), settings(**OPERATOR), t)
    assert (receipt.title, receipt.paid, receipt.note) == ("Receipt", True, None)
    assert rows(receipt) == {
        "number": "3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
        "time": "January 5, 2026, 3:05:05\u202fPM +0200",  # when it was paid, at the operator's time
        "account": "dr••••4567",  # masked, as on every page
        "status": "Credited",
        "method": "E-wallet",
        "amount": "€25.00",
        "bonus": "€1.00",
        "fee": "€0.58",
        "total": "€25.58",  # amount and fee: what the driver paid
        "added": "€26.00",  # amount and bonus: what the balance gained
        "reference": "sbx_ref_9f8e7d6c",
    }
    labels = [row.label for row in receipt.rows]
    assert labels[-4:] == ["Fee", "Total paid", "Added to your balance", "Payment reference"]
    assert receipt.operator == receipts.Operator(
        "Demo Charging", "Demo Charging Ltd.", ["1 Charge Street", "Sofia 1000"], "BG123456789", "help@demo.example"
    )
    assert receipt.time_iso == PAID.isoformat()


def test_a_top_up_that_was_not_paid_is_details_not_a_receipt() -> None:
    t = Translator("en")
    for status in (OrderStatus.PENDING, OrderStatus.FAILED, OrderStatus.EXPIRED):
        receipt = receipts.receipt(
            order(status=status, paid_at=None, processor_reference=None, bonus_minor=0), settings(), t
        )
        assert (receipt.title, receipt.paid) == ("Top-up details", False)
        assert receipt.note == t(f"status_{status.value}")
        labels = {row.id: row.label for row in receipt.rows}
        assert labels["total"] == "Total" and "added" not in labels and "reference" not in labels
        assert "bonus" not in labels  # no bonus, no line
        assert rows(receipt)["time"] == "January 5, 2026, 1:04:05\u202fPM UTC"  # when it was made; UTC by default


def test_paid_and_refunded_top_ups_are_receipts_with_what_became_of_them() -> None:
    t = Translator("en")
    paid = receipts.receipt(order(status=OrderStatus.PAID), settings(), t)
    assert paid.paid and paid.note is None and "added" not in rows(paid)  # not credited yet
    refunded = receipts.receipt(order(status=OrderStatus.REFUNDED), settings(), t)
    assert refunded.title == "Receipt" and refunded.note == t("status_refunded")
    assert {row.id: row.label for row in refunded.rows}["total"] == "Total paid"
    review = receipts.receipt(order(status=OrderStatus.UNDER_REVIEW), settings(), t)
    assert review.paid and review.note == t("status_under_review")


def test_the_operators_details_are_shown_only_when_set() -> None:
    receipt = receipts.receipt(order(), settings(), Translator("en"))
    assert receipt.operator == receipts.Operator("Demo Charging", None, [], None, None)
    page = history.receipt_document(settings(), order(), "en")
    assert "VAT ID" not in page and "Support" not in page and "mailto:" not in page
    page = history.receipt_document(settings(**OPERATOR), order(), "en")
    assert "Demo Charging Ltd." in page and "Sofia 1000" in page
    assert 'VAT ID: <span dir="ltr">BG123456789</span>' in page and 'href="mailto:help@demo.example"' in page


def test_the_methods_name_is_translated_and_survives_a_retired_integration() -> None:
    assert rows(receipts.receipt(order(), settings(), Translator("bg")))["method"] == Translator("bg")("method_wallet")
    gone = order(integration_id="retired_one", method="ideal")
    assert rows(receipts.receipt(gone, settings(), Translator("en")))["method"] == "ideal"


def test_the_operators_words_are_escaped_in_the_receipt() -> None:
    page = history.receipt_document(
        settings(**{**OPERATOR, "EVTOPUP__OPERATOR__LEGAL_NAME": "<script>x</script> & Co"}), order(), "en"
    )
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt; &amp; Co" in page


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("TIMEZONE", "Mars/Olympus_Mons", "operator.timezone"),
        ("TIMEZONE", "../../etc/passwd", "operator.timezone"),
        ("SUPPORT_EMAIL", "not an address", "operator.support_email"),
        ("VAT_ID", "", "operator.vat_id"),
    ],
)
def test_bad_operator_details_are_refused(key: str, value: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        settings(**{f"EVTOPUP__OPERATOR__{key}": value})


def test_the_timezone_is_utc_unless_set() -> None:
    assert settings().operator.timezone == "UTC"
    assert settings(**OPERATOR).operator.timezone == "Europe/Sofia"


# --- the PDF ---------------------------------------------------------------------------------------


def pdf_text(document: bytes) -> str:
    assert document.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(document))
    # Compatibility forms: a PDF's text gives Thai's SARA AM back as NIKHAHIT and SARA AA.
    return unicodedata.normalize("NFKC", "\n".join(page.extract_text() for page in reader.pages))


def words_in(expected: str, text: str) -> bool:
    """Every word of ``expected`` in ``text`` (a PDF's text of a right-to-left line may come back
    with its phrases, and the punctuation between them, in another order)."""
    return all(word in text for word in re.findall(r"\w+", unicodedata.normalize("NFKC", expected)))


def digits(money: str) -> str:
    """The amount of a formatted sum, without its currency and direction marks."""
    return re.sub(r"[^0-9.,\u066b\u066c]", "", money)  # Arabic decimal and thousands separators kept


@pytest.mark.parametrize("locale", ["en", "ar", "th", "hi", "he", "bg", "el", "uk"])
def test_the_pdf_says_the_receipt_in_the_drivers_language_and_script(locale: str) -> None:
    if not pdf.PdfRenderer([]).available:
        pytest.fail("WeasyPrint is not installed: pip install -e '.[dev]'")
    t = Translator(locale)
    document = pdf.render_pdf(history.receipt_document(settings(**OPERATOR), order(), locale))
    text = pdf_text(document)
    for key in ("receipt_title", "receipt_amount", "receipt_fee", "receipt_total", "receipt_reference"):
        assert words_in(t(key), text), (key, t(key), text)
    assert words_in(t("method_wallet"), text) and words_in(t("demo_banner"), text)
    for amount_minor in (2500, 100, 58, 2558, 2600):
        assert digits(t.money(amount_minor, "EUR")) in text, (amount_minor, text)
    for fixed in ("sbx_ref_9f8e7d6c", "3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "BG123456789", "help@demo.example"):
        assert fixed in text
    assert "Demo Charging Ltd." in text and "Sofia 1000" in text
    assert "\N{REPLACEMENT CHARACTER}" not in text


def test_the_pdf_is_tagged_in_the_drivers_language_and_titled() -> None:
    document = pdf.render_pdf(history.receipt_document(settings(), order(), "ar"))
    reader = PdfReader(io.BytesIO(document))
    root = reader.trailer["/Root"]
    assert root["/Lang"] == "ar" and "/StructTreeRoot" in root  # tagged: readable by assistive technology
    assert reader.metadata is not None
    assert reader.metadata.title == f"Demo Charging · {Translator('ar')('receipt_title')}"


def test_a_receipt_loads_nothing_from_anywhere() -> None:
    html = '<html><body><img src="http://127.0.0.1:9/x.png"><p>ok</p></body></html>'
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:9") as refused:  # an ordinary exception, not a BaseException
        pdf.render_pdf(html)
    assert "a receipt loads nothing" in str(refused.value.__cause__)


async def test_without_weasyprint_the_pdf_is_unavailable_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pdf.importlib.util, "find_spec", lambda _name: None)
    renderer = pdf.PdfRenderer(["en"])
    assert not renderer.available and "pip install 'evtopup[pdf]'" in (renderer.unavailable or "")
    with pytest.raises(pdf.PdfUnavailable):
        await renderer.render("<p>x</p>")


async def test_too_many_waiting_pdfs_are_refused_not_queued() -> None:
    renderer = pdf.PdfRenderer([])
    renderer._waiting = pdf.MAX_WAITING
    with pytest.raises(pdf.PdfBusy):
        await renderer.render("<p>x</p>")


def test_missing_fonts_are_named_by_language(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pdf.languages_without_fonts(["en", "en-GB", "th", "hi", "ar"]) == []  # fonts-noto-core (CI installs it)
    assert pdf.languages_without_fonts(["zz", "en"]) == ["zz"]
    monkeypatch.setattr(pdf.shutil, "which", lambda _name: None)
    assert pdf.languages_without_fonts(["th"]) == []  # nobody to ask: nothing claimed
