"""The driver's language: picking the locale we offer that is closest to the app's, the page's
texts, and money formatted the local way (Babel). Catalogues move to gettext files when the page
grows past a handful of languages."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, format_percent

from shared.money import to_major

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Top up your balance",
        "choose_package": "Choose an amount",
        "bonus": "+{bonus} bonus",
        "custom_amount": "Or enter an amount ({min} – {max})",
        "method": "Pay with",
        "fee": "fee {fee}",
        "method_card": "Card",
        "method_wallet": "E-wallet",
        "method_bank_transfer": "Bank transfer",
        "method_mobile_money": "Mobile money",
        "pay": "Continue to payment",
        "status_pending": "Waiting for your payment…",
        "status_paid": "Payment received. Adding it to your balance…",
        "status_credited": "Done! Your balance has been topped up.",
        "status_failed": "The payment did not go through. You have not been charged.",
        "status_expired": "The payment was not completed in time.",
        "status_under_review": (
            "We received your payment, but it needs a check by our staff before it reaches your balance."
            " Please do not pay again: you will be credited or refunded."
        ),
        "status_refunded": "Our staff returned your payment to you. Your balance has not changed.",
        "new_balance": "New balance: {balance}",
        "back_to_app": "Back to app",
        "try_again": "Try again",
        "unauthorized": "Please open the top-up from the app again.",
        "error": "Something went wrong",
        "demo_banner": "Demo — no real money is taken; balances are not real",
        "test_banner": "TEST — the processor's test mode: no real money is taken and your real balance does not change",
        "account": "Topping up account {account}",
        "switch_question": "You are signed in as {current}. Switch to {new}?",
        "switch_confirm": "Switch to {new}",
        "switch_stay": "Stay signed in as {current}",
        "wrong_launch": "This link cannot open the top-up. Please open the top-up from the app again.",
        "bad_user_id": "This link does not name a valid account. Please open the top-up from the app again.",
        "user_not_found": "We could not find your account. Please open the top-up from the app again.",
        "try_again_later": "We cannot check your account right now. Please try again in a moment.",
        "too_many_launches": "Too many attempts. Please wait a minute and try again.",
        "phone_label": "Your phone number",
        "phone_hint": "Country code first, digits only, e.g. {example}",
        "phone_required": "Please enter your phone number.",
        "phone_invalid": "Please enter your phone number with the country code first: 8 to 15 digits, no leading 0.",
        "status_pending_phone": "Check your phone: approve the payment of {amount} there. This page updates by itself.",
        "processor_refused": (
            "The payment provider did not accept this payment. Please choose another amount or payment method"
            " and try again."
        ),
        "processor_refused_phone": (
            "The payment provider did not accept this payment. Please check your phone number (or choose another"
            " amount) and try again."
        ),
        "checkout_uncertain": (
            "We could not confirm this payment attempt, so it will not be continued. Please start a new top-up"
            " with the form below. If you already approved a payment, check your balance in the app first."
        ),
        "provider_unavailable": "The payment provider is not answering right now. Please try again in a moment.",
        "prices_updating": "Prices are being updated. Please try again in a moment.",
        "changed_since_sent": (
            "This form was already sent with other details. Please check your choices and press the button again."
        ),
    },
    "bg": {
        "title": "Зареди баланса си",
        "choose_package": "Изберете сума",
        "bonus": "+{bonus} бонус",
        "custom_amount": "Или въведете сума ({min} – {max})",
        "method": "Плащане с",
        "fee": "такса {fee}",
        "method_card": "Карта",
        "method_wallet": "Електронен портфейл",
        "method_bank_transfer": "Банков превод",
        "method_mobile_money": "Мобилни пари",
        "pay": "Към плащането",
        "status_pending": "Очакваме плащането ви…",
        "status_paid": "Плащането е получено. Добавяме го към баланса ви…",
        "status_credited": "Готово! Балансът ви е зареден.",
        "status_failed": "Плащането не премина. Не сте таксувани.",
        "status_expired": "Плащането не беше завършено навреме.",
        "status_under_review": (
            "Получихме плащането ви, но преди да стигне до баланса ви, то трябва да бъде проверено от"
            " нашия екип. Моля, не плащайте отново: сумата ще бъде добавена към баланса ви или възстановена."
        ),
        "status_refunded": "Нашият екип ви върна плащането. Балансът ви не е променен.",
        "new_balance": "Нов баланс: {balance}",
        "back_to_app": "Обратно към приложението",
        "try_again": "Опитайте отново",
        "unauthorized": "Моля, отворете зареждането отново от приложението.",
        "error": "Нещо се обърка",
        "demo_banner": "Демо — не се взимат истински пари; балансите не са истински",
        "test_banner": (
            "ТЕСТ — тестов режим на платежния доставчик: не се взимат истински пари и истинският ви баланс"
            " не се променя"
        ),
        "account": "Зареждане на сметка {account}",
        "switch_question": "Влезли сте като {current}. Да превключим ли към {new}?",
        "switch_confirm": "Превключи към {new}",
        "switch_stay": "Остани като {current}",
        "wrong_launch": "Тази връзка не може да отвори зареждането. Моля, отворете зареждането отново от приложението.",
        "bad_user_id": "Тази връзка не сочи валиден акаунт. Моля, отворете зареждането отново от приложението.",
        "user_not_found": "Не успяхме да намерим акаунта ви. Моля, отворете зареждането отново от приложението.",
        "try_again_later": "В момента не можем да проверим акаунта ви. Моля, опитайте отново след малко.",
        "too_many_launches": "Твърде много опити. Моля, изчакайте минута и опитайте отново.",
        "phone_label": "Вашият телефонен номер",
        "phone_hint": "Първо кодът на държавата, само цифри, напр. {example}",
        "phone_required": "Моля, въведете телефонния си номер.",
        "phone_invalid": (
            "Моля, въведете телефонния си номер, като започнете с кода на държавата: от 8 до 15 цифри, без водеща 0."
        ),
        "status_pending_phone": (
            "Проверете телефона си: одобрете там плащането на {amount}. Тази страница се обновява сама."
        ),
        "processor_refused": (
            "Доставчикът на плащания не прие това плащане. Моля, изберете друга сума или друг начин на плащане"
            " и опитайте отново."
        ),
        "processor_refused_phone": (
            "Доставчикът на плащания не прие това плащане. Моля, проверете телефонния си номер (или изберете"
            " друга сума) и опитайте отново."
        ),
        "checkout_uncertain": (
            "Не успяхме да потвърдим този опит за плащане, затова той няма да продължи. Моля, започнете ново"
            " зареждане с формуляра по-долу. Ако вече сте одобрили плащане, първо проверете баланса си в"
            " приложението."
        ),
        "provider_unavailable": "Доставчикът на плащания не отговаря в момента. Моля, опитайте отново след малко.",
        "prices_updating": "Цените се обновяват. Моля, опитайте отново след малко.",
        "changed_since_sent": (
            "Този формуляр вече беше изпратен с други данни. Моля, проверете избора си и натиснете бутона отново."
        ),
    },
}


def negotiate_locale(requested: str, offered: list[str]) -> str | None:
    """The offered locale closest to ``requested`` (``en-GB`` → ``en`` if only ``en`` is offered), or
    None if none is."""
    requested = requested.replace("_", "-").strip()
    by_lower = {locale.lower(): locale for locale in offered}
    if requested.lower() in by_lower:
        return by_lower[requested.lower()]
    language = requested.split("-")[0].lower()
    return by_lower.get(language)


def choose_locale(requested: str, offered: list[str], default: str) -> str:
    """``en-GB`` → ``en`` if only ``en`` is offered; anything unknown → the operator's default."""
    return negotiate_locale(requested, offered) or default


def choose_first_locale(candidates: list[str | None], offered: list[str], default: str) -> str:
    """The first candidate (in order of preference) that matches an offered locale; else the default."""
    for candidate in candidates:
        if candidate:
            chosen = negotiate_locale(candidate, offered)
            if chosen is not None:
                return chosen
    return default


class Translator:
    def __init__(self, locale: str) -> None:
        self.locale = locale
        self._messages = MESSAGES.get(locale.split("-")[0], MESSAGES["en"])

    def __call__(self, key: str, **values: str) -> str:
        return self._messages.get(key, MESSAGES["en"][key]).format(**values)

    def method(self, method: str, processor_name: str | None = None) -> str:
        """A payment method's name: translated where the catalogue has it (generic names), else as the
        processor names it (brands: "iDEAL"), else as configured."""
        key = f"method_{method}"
        return self._messages.get(key, MESSAGES["en"].get(key, processor_name or method))

    def percent(self, rate_bp: int) -> str:
        formatted: str = format_percent(Decimal(rate_bp) / 10_000, "#,##0.##%", locale=self.locale.replace("-", "_"))
        return formatted

    def money(self, amount_minor: int, currency: str) -> str:
        formatted: str = format_currency(
            to_major(amount_minor, currency), currency, locale=self.locale.replace("-", "_")
        )
        return formatted
