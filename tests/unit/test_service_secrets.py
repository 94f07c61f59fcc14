"""Each service holds only its own secrets (shared/settings.py): a secret is known by its type, a
service's load never reads another's (not even its file), and ``run all`` hands each child process
only the environment variables it may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import ConfigError, WithheldSecret, load_settings, secret_environment_names

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.toml"

PAGE_ONLY = {"EVTOPUP__LAUNCH__SECRET": "launch-secret-0123456789abcdefghijklmnop"}
PAYMENTS_ONLY = {
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY": "sandbox-api-key-value",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET": "sandbox-webhook-secret-value",
}
CREDITING_ONLY = {"EVTOPUP__CREDITING__API_TOKEN": "crediting-token-value"}
BROKER = {
    "EVTOPUP__AMQP__PASSWORD": "operator-password",
    "EVTOPUP__AMQP__PAGE_PASSWORD": "page-broker-password",
    "EVTOPUP__AMQP__PAYMENTS_PASSWORD": "payments-broker-password",
    "EVTOPUP__AMQP__CREDITING_PASSWORD": "crediting-broker-password",
}
ALL = {**PAGE_ONLY, **PAYMENTS_ONLY, **CREDITING_ONLY, **BROKER}


def withheld(secret: object) -> bool:
    if not isinstance(secret, WithheldSecret):
        return False
    with pytest.raises(RuntimeError, match="another service"):
        secret.get_secret_value()
    return True


def test_the_page_holds_only_its_own_secrets() -> None:
    settings = load_settings(DEMO, ALL, service="page")
    assert settings.launch.secret.get_secret_value() == PAGE_ONLY["EVTOPUP__LAUNCH__SECRET"]
    assert settings.amqp.credentials("page")[1].get_secret_value() == "page-broker-password"
    assert withheld(settings.integrations["sandbox_demo"].api_key)
    assert withheld(settings.integrations["sandbox_demo"].webhook_secret)
    assert withheld(settings.crediting.api_token)
    assert withheld(settings.amqp.password)
    assert withheld(settings.amqp.payments_password)
    assert withheld(settings.amqp.crediting_password)


def test_payments_holds_the_processor_secrets_and_nothing_of_the_page() -> None:
    settings = load_settings(DEMO, ALL, service="payments")
    assert settings.integrations["sandbox_demo"].api_key.get_secret_value() == "sandbox-api-key-value"
    assert settings.amqp.credentials("payments")[1].get_secret_value() == "payments-broker-password"
    assert withheld(settings.launch.secret)
    assert withheld(settings.crediting.api_token)
    assert withheld(settings.amqp.page_password)


def test_crediting_holds_its_token() -> None:
    settings = load_settings(DEMO, ALL, service="crediting")
    assert settings.crediting.api_token.get_secret_value() == "crediting-token-value"
    assert withheld(settings.launch.secret)
    assert withheld(settings.integrations["sandbox_demo"].api_key)


def test_a_service_starts_without_the_secrets_of_others() -> None:
    env = {**PAGE_ONLY, "EVTOPUP__AMQP__PAGE_PASSWORD": "page-broker-password"}
    settings = load_settings(DEMO, env, service="page")
    assert settings.launch.secret.get_secret_value() == PAGE_ONLY["EVTOPUP__LAUNCH__SECRET"]


def test_a_service_missing_its_own_secret_is_a_config_error_naming_it() -> None:
    env = {k: v for k, v in ALL.items() if k != "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET"}
    with pytest.raises(ConfigError, match=r"^integrations\.sandbox_demo\.webhook_secret: "):
        load_settings(DEMO, env, service="payments")
    # ... and the page, which never holds it, does not care.
    load_settings(DEMO, env, service="page")


def test_another_services_secret_file_is_never_read(tmp_path: Path) -> None:
    env = {**PAGE_ONLY, **BROKER, "EVTOPUP__CREDITING__API_TOKEN_FILE": str(tmp_path / "missing")}
    load_settings(DEMO, env, service="page")
    with pytest.raises(ConfigError, match=r"^crediting\.api_token_file: cannot read"):
        load_settings(DEMO, env, service="crediting")


def test_the_operator_holds_every_secret() -> None:
    settings = load_settings(DEMO, ALL)
    assert settings.amqp.password.get_secret_value() == "operator-password"
    assert settings.launch.secret.get_secret_value() == PAGE_ONLY["EVTOPUP__LAUNCH__SECRET"]
    assert settings.crediting.api_token.get_secret_value() == "crediting-token-value"


def test_a_secret_is_known_by_its_type_not_its_name(tmp_path: Path) -> None:
    config = tmp_path / "evtopup.toml"
    config.write_text(DEMO.read_text().replace('username = "guest"', 'username = "guest"\npage_password = "x"'))
    with pytest.raises(ConfigError, match=r"^amqp\.page_password: secrets may not be written"):
        load_settings(config, ALL)


@pytest.mark.parametrize(
    ("service", "kept", "removed"),
    [
        ("page", PAGE_ONLY, {**PAYMENTS_ONLY, **CREDITING_ONLY}),
        ("payments", PAYMENTS_ONLY, {**PAGE_ONLY, **CREDITING_ONLY}),
        ("crediting", CREDITING_ONLY, {**PAGE_ONLY, **PAYMENTS_ONLY}),
    ],
)
def test_a_child_process_gets_only_its_own_secret_variables(
    service: str, kept: dict[str, str], removed: dict[str, str]
) -> None:
    environ = {**ALL, "EVTOPUP__LAUNCH__SECRET_FILE": "/run/secrets/launch", "PATH": "/usr/bin"}
    names = set(secret_environment_names(environ, service))
    assert set(removed) <= names
    assert not set(kept) & names
    assert "PATH" not in names
    assert "EVTOPUP__AMQP__PASSWORD" in names  # the operator's broker account: no service holds it
    assert f"EVTOPUP__AMQP__{service.upper()}_PASSWORD" not in names
    assert ("EVTOPUP__LAUNCH__SECRET_FILE" in names) == (service != "page")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVTOPUP__AMQP", '{"url": "amqp://h:5672/v", "password": "operator-password"}'),
        ("EVTOPUP__INTEGRATIONS__SANDBOX_DEMO", '{"processor": "sandbox", "methods": ["card"], "api_key": "k" }'),
        ("EVTOPUP__INTEGRATIONS", '{"sandbox_demo": {"webhook_secret_file": "/run/secrets/wh"}}'),
        ("EVTOPUP__LAUNCH", '{"secret": "launch-secret-0123456789abcdefghijklmnop"}'),
    ],
)
def test_a_secret_inside_a_json_table_is_refused(name: str, value: str) -> None:
    # Such a variable could not be kept from the services that may not hold the secret in it.
    with pytest.raises(ConfigError, match=rf"^{name}: a table set as JSON may not hold secrets"):
        load_settings(DEMO, {**ALL, name: value})


def test_a_json_table_without_secrets_is_still_an_override() -> None:
    settings = load_settings(
        DEMO,
        {
            **ALL,
            "EVTOPUP__OPERATOR": '{"name": "Other CPO", "currency": "EUR",'
            ' "locales": ["en"], "default_locale": "en", "return_deep_link": "x://y"}',
        },
    )
    assert settings.operator.name == "Other CPO"
