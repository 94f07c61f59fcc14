"""shared/settings.py: one TOML file, environment overrides, secrets only from env or files, and a
ConfigError naming the dotted key for anything wrong. Never touches os.environ."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.page.i18n import available_locales
from shared.pricing import integration_for_user
from shared.settings import (
    ConfigError,
    CsmsSettings,
    IntegrationSettings,
    Settings,
    apply_reload,
    changed_integrations,
    load_settings,
    reloaded_settings,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_TOML = (REPO / "config" / "demo.toml").read_text()

LAUNCH_SECRET = "launch-secret-0123456789abcdefghijklmnop"
SECRETS = {
    "EVTOPUP__LAUNCH__SECRET": LAUNCH_SECRET,
    "EVTOPUP__CREDITING__API_TOKEN": "crediting-token-value",
    "EVTOPUP__AMQP__PASSWORD": "amqp-password-value",
    "EVTOPUP__AMQP__PAGE_PASSWORD": "amqp-page-password",
    "EVTOPUP__AMQP__PAYMENTS_PASSWORD": "amqp-payments-password",
    "EVTOPUP__AMQP__CREDITING_PASSWORD": "amqp-crediting-password",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY": "sandbox-api-key-value",
    "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET": "sandbox-webhook-secret-value",
}

TEST_INTEGRATION = """
[integrations.sandbox_test]
processor = "sandbox"
environment = "test"
active = true
methods = ["card"]
test_users = ["tester-1", "tester-2"]
"""
TEST_INTEGRATION_SECRETS = {
    "EVTOPUP__INTEGRATIONS__SANDBOX_TEST__API_KEY": "test-integration-api-key",
    "EVTOPUP__INTEGRATIONS__SANDBOX_TEST__WEBHOOK_SECRET": "test-integration-webhook-secret",
}


def write_config(tmp_path: Path, text: str = DEMO_TOML) -> Path:
    path = tmp_path / "evtopup.toml"
    path.write_text(text)
    return path


def load(
    tmp_path: Path,
    text: str = DEMO_TOML,
    env: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> Settings:
    environ = {k: v for k, v in SECRETS.items() if k not in drop}
    environ.update(env or {})
    return load_settings(write_config(tmp_path, text), environ)


def config_error(tmp_path: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- the demo configuration ---------------------------------------------------------------------


def test_demo_config_loads(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.operator.currency == "EUR"
    assert settings.operator.locales == available_locales()  # the demo offers every language
    assert settings.launch.secret.get_secret_value() == LAUNCH_SECRET
    assert settings.amqp.password.get_secret_value() == "amqp-password-value"
    assert settings.crediting.api_token.get_secret_value() == "crediting-token-value"
    demo = settings.integrations["sandbox_demo"]
    assert demo.api_key.get_secret_value() == "sandbox-api-key-value"
    assert demo.webhook_secret.get_secret_value() == "sandbox-webhook-secret-value"
    assert demo.fees["wallet"].fixed_minor == 20
    assert demo.fees["wallet"].rate_bp == 150
    assert [p.id for p in settings.amounts.packages] == ["p10", "p25", "p50"]
    assert settings.services.page_port == 8080


def test_secrets_are_not_shown_in_repr(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert LAUNCH_SECRET not in repr(settings)
    assert "sandbox-webhook-secret-value" not in repr(settings)


def test_path_from_evtopup_config_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    settings = load_settings(None, {**SECRETS, "EVTOPUP_CONFIG": str(path)})
    assert settings.operator.name == "Demo Charging"


def test_no_path_at_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EVTOPUP_CONFIG"):
        load_settings(None, dict(SECRETS))


# --- environment overrides ----------------------------------------------------------------------


def test_env_overrides_a_value(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__SERVICES__PAGE_PORT": "9080"})
    assert settings.services.page_port == 9080
    assert settings.services.payments_port == 8081


@pytest.mark.parametrize(
    "name",
    ["EVTOPUP__services__page_port", "EVTOPUP__Services__Page_Port", "EVTOPUP__SERVICES__page_PORT"],
)
def test_env_override_keys_are_case_insensitive(tmp_path: Path, name: str) -> None:
    assert load(tmp_path, env={name: "9081"}).services.page_port == 9081


def test_env_override_of_nested_integration_secret(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET": "rotated-webhook-secret"})
    assert settings.integrations["sandbox_demo"].webhook_secret.get_secret_value() == "rotated-webhook-secret"


def test_env_override_with_json_list(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        env={"EVTOPUP__OPERATOR__LOCALES": '["bg", "en", "ro"]', "EVTOPUP__OPERATOR__DEFAULT_LOCALE": "ro"},
    )
    assert settings.operator.locales == ["bg", "en", "ro"]
    assert settings.operator.default_locale == "ro"


def test_env_override_with_json_table(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__FEES": '{"card": {"fixed_minor": 5}}'})
    fees = settings.integrations["sandbox_demo"].fees
    assert set(fees) == {"card"}
    assert fees["card"].fixed_minor == 5


def test_env_override_with_invalid_json(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"EVTOPUP__OPERATOR__LOCALES": '["en", '})
    assert message.startswith("EVTOPUP__OPERATOR__LOCALES")
    assert "JSON" in message


def test_env_override_booleans_and_numbers_are_converted(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__AMOUNTS__CUSTOM_ALLOWED": "false", "EVTOPUP__AMQP__RPC_TIMEOUT_S": "2.5"})
    assert settings.amounts.custom_allowed is False
    assert settings.amqp.rpc_timeout_s == 2.5


def test_unrelated_environment_is_ignored(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"PATH": "/bin", "EVTOPUP_OTHER": "x", "HOME": "/root"})
    assert settings.services.page_port == 8080


def test_env_override_with_empty_part(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"EVTOPUP__SERVICES____PAGE_PORT": "1"})
    assert message.startswith("EVTOPUP__SERVICES____PAGE_PORT")


def test_env_override_below_a_value_that_is_not_a_section(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"EVTOPUP__LOG_LEVEL__X": "1"})
    assert message.startswith("log_level.x")


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "dotted"),
    [
        ("[launch]", 'secret = "written-in-the-file-0123456789abcdef"', "launch.secret"),
        ("[amqp]", 'password = "written-in-the-file"', "amqp.password"),
        (
            "[integrations.sandbox_demo]",
            'webhook_secret = "written-in-the-file"',
            "integrations.sandbox_demo.webhook_secret",
        ),
        ("[integrations.sandbox_demo]", 'api_key = "written-in-the-file"', "integrations.sandbox_demo.api_key"),
    ],
)
def test_secret_written_in_the_file_is_refused(tmp_path: Path, section: str, key: str, dotted: str) -> None:
    text = DEMO_TOML.replace(section, f"{section}\n{key}", 1)
    assert text != DEMO_TOML
    message = config_error(tmp_path, text=text)
    assert message.startswith(f"{dotted}:")
    assert "written-in-the-file" not in message


def test_crediting_api_token_written_in_the_file_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, text=DEMO_TOML + '\n[crediting]\napi_token = "written-in-the-file"\n')
    assert message.startswith("crediting.api_token:")
    assert "EVTOPUP__CREDITING__API_TOKEN" in message
    assert "written-in-the-file" not in message


def test_secret_read_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "launch.secret"
    secret_file.write_text("from-a-file-0123456789abcdefghijklmnop\n")
    text = DEMO_TOML.replace("[launch]", f"[launch]\nsecret_file = {str(secret_file)!r}", 1)
    settings = load(tmp_path, text=text, drop=("EVTOPUP__LAUNCH__SECRET",))
    assert settings.launch.secret.get_secret_value() == "from-a-file-0123456789abcdefghijklmnop"


def test_integration_secret_read_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("whsec_from_file_0123456789")
    text = DEMO_TOML.replace(
        "[integrations.sandbox_demo]", f"[integrations.sandbox_demo]\nwebhook_secret_file = {str(secret_file)!r}", 1
    )
    settings = load(tmp_path, text=text, drop=("EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET",))
    assert settings.integrations["sandbox_demo"].webhook_secret.get_secret_value() == "whsec_from_file_0123456789"


def test_missing_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.secret"
    text = DEMO_TOML.replace("[launch]", f"[launch]\nsecret_file = {str(missing)!r}", 1)
    message = config_error(tmp_path, text=text, drop=("EVTOPUP__LAUNCH__SECRET",))
    assert message.startswith("launch.secret_file:")


def test_secret_file_that_is_not_a_string(tmp_path: Path) -> None:
    # A config value of the wrong type must be a ConfigError naming the key, not a TypeError.
    text = DEMO_TOML.replace("[launch]", "[launch]\nsecret_file = 12345", 1)
    message = config_error(tmp_path, text=text, drop=("EVTOPUP__LAUNCH__SECRET",))
    assert message.startswith("launch.secret_file")


def test_short_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    short = "short-launch-secret-XYZ"
    message = config_error(tmp_path, env={"EVTOPUP__LAUNCH__SECRET": short})
    assert message.startswith("launch.secret:")
    assert "32" in message
    assert short not in message


def test_launch_secret_of_exactly_32_characters_is_accepted(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__LAUNCH__SECRET": "a" * 32})
    assert settings.launch.secret.get_secret_value() == "a" * 32
    message = config_error(tmp_path, env={"EVTOPUP__LAUNCH__SECRET": "b" * 31})
    assert message.startswith("launch.secret:")
    assert "b" * 31 not in message


@pytest.mark.parametrize(
    ("name", "dotted"),
    [
        ("EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY", "integrations.sandbox_demo.api_key"),
        ("EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET", "integrations.sandbox_demo.webhook_secret"),
        ("EVTOPUP__CREDITING__API_TOKEN", "crediting.api_token"),
    ],
)
def test_short_integration_and_api_secrets_are_refused_without_showing_them(
    tmp_path: Path, name: str, dotted: str
) -> None:
    assert load(tmp_path, env={name: "S" * 16}) is not None
    message = config_error(tmp_path, env={name: "Q" * 15})
    assert message.startswith(f"{dotted}:")
    assert "Q" * 15 not in message


def test_empty_amqp_password_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"EVTOPUP__AMQP__PASSWORD": ""})
    assert message.startswith("amqp.password:")


@pytest.mark.parametrize("value", ['{"looks": "like json 0123456789abcdef"}', "[not-json-0123456789abcdefghijklmn"])
def test_secret_from_the_environment_is_taken_verbatim_even_if_it_looks_like_json(tmp_path: Path, value: str) -> None:
    settings = load(tmp_path, env={"EVTOPUP__LAUNCH__SECRET": value})
    assert settings.launch.secret.get_secret_value() == value


def test_secret_file_named_in_the_environment_is_read(tmp_path: Path) -> None:
    secret_file = tmp_path / "launch-secret"
    secret_file.write_text("s" * 40 + "\n")
    settings = load(tmp_path, env={"EVTOPUP__LAUNCH__SECRET_FILE": str(secret_file)}, drop=("EVTOPUP__LAUNCH__SECRET",))
    assert settings.launch.secret.get_secret_value() == "s" * 40


# --- missing and bad values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dropped", "dotted"),
    [
        ("EVTOPUP__LAUNCH__SECRET", "launch.secret"),
        ("EVTOPUP__AMQP__PASSWORD", "amqp.password"),
        ("EVTOPUP__CREDITING__API_TOKEN", "crediting"),
        ("EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__API_KEY", "integrations.sandbox_demo.api_key"),
        ("EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__WEBHOOK_SECRET", "integrations.sandbox_demo.webhook_secret"),
    ],
)
def test_missing_required_secret(tmp_path: Path, dropped: str, dotted: str) -> None:
    message = config_error(tmp_path, drop=(dropped,))
    assert message.startswith(f"{dotted}:")


def test_missing_required_key_in_file(tmp_path: Path) -> None:
    text = DEMO_TOML.replace('name = "Demo Charging"\n', "", 1)
    message = config_error(tmp_path, text=text)
    assert message.startswith("operator.name:")
    assert "required" in message.lower()


def test_missing_section(tmp_path: Path) -> None:
    text = DEMO_TOML.replace("[databases]", "[unused_databases_placeholder]", 1)
    message = config_error(tmp_path, text=text)
    assert message.startswith("databases: Field required")


@pytest.mark.parametrize(
    ("env", "dotted"),
    [
        ({"EVTOPUP__SERVICES__PAGE_PORT": "70000"}, "services.page_port"),
        ({"EVTOPUP__SERVICES__PAYMENTS_PORT": "0"}, "services.payments_port"),
        ({"EVTOPUP__SERVICES__CREDITING_PORT": "eighty"}, "services.crediting_port"),
        ({"EVTOPUP__OPERATOR__CURRENCY": "EURO"}, "operator.currency"),
        ({"EVTOPUP__OPERATOR__CURRENCY": "eur"}, "operator.currency"),
        ({"EVTOPUP__OPERATOR__CURRENCY": "XYZ"}, "operator.currency"),
        ({"EVTOPUP__OPERATOR__LOCALES": '["en", "xx"]'}, "operator: locales: the page has no catalogue for ['xx']"),
        ({"EVTOPUP__OPERATOR__LOCALES": '["en", "bg"]', "EVTOPUP__OPERATOR__DEFAULT_LOCALE": "fr"}, "operator"),
        ({"EVTOPUP__AMOUNTS__MIN_MINOR": "60000"}, "amounts"),
        ({"EVTOPUP__AMOUNTS__MIN_MINOR": "0"}, "amounts.min_minor"),
        ({"EVTOPUP__LAUNCH__TOKEN_MAX_AGE_S": "901"}, "launch.token_max_age_s"),
        ({"EVTOPUP__LAUNCH__MODE": "bare"}, "launch.mode"),
        ({"EVTOPUP__LOG_LEVEL": "verbose"}, "log_level"),
        ({"EVTOPUP__AMQP__URL": "amqp://guest:guest@127.0.0.1/"}, "amqp.url"),
        ({"EVTOPUP__AMQP__PREFETCH": "0"}, "amqp.prefetch"),
        ({"EVTOPUP__DATABASES__PAGE": "mysql://x/y"}, "databases.page"),
        ({"EVTOPUP__CSMS__KIND": "unknown"}, "csms.kind"),
        ({"EVTOPUP__OPERATOR__UNKNOWN_KEY": "x"}, "operator.unknown_key"),
        ({"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__PROCESSOR": "worldpay"}, "integrations.sandbox_demo.processor"),
        ({"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__METHODS": "[]"}, "integrations.sandbox_demo.methods"),
        (
            {"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__FEES": '{"wallet": {"rate_bp": 10001}}'},
            "integrations.sandbox_demo.fees.wallet.rate_bp",
        ),
        (
            {"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__FEES": '{"wallet": {"fixed_minor": -1}}'},
            "integrations.sandbox_demo.fees.wallet.fixed_minor",
        ),
        ({"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__FEES": '{"bank": {"fixed_minor": 10}}'}, "integrations.sandbox_demo"),
        ({"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__ACTIVE": "false"}, "integrations:"),
        ({"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__ENVIRONMENT": "test"}, "integrations:"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, env: dict[str, str], dotted: str) -> None:
    message = config_error(tmp_path, env=env)
    assert message.startswith(f"{dotted}"), message
    assert "Traceback" not in message


def test_default_locale_not_offered(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, env={"EVTOPUP__OPERATOR__LOCALES": '["en", "bg"]', "EVTOPUP__OPERATOR__DEFAULT_LOCALE": "fr"}
    )
    assert message.startswith("operator:")
    assert "'fr'" in message


def test_min_greater_than_max(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"EVTOPUP__AMOUNTS__MIN_MINOR": "50001"})
    assert message.startswith("amounts:")
    assert "min_minor" in message


def test_min_equal_to_max_is_allowed(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__AMOUNTS__MIN_MINOR": "50000"})
    assert settings.amounts.min_minor == settings.amounts.max_minor == 50000


def test_port_boundaries(tmp_path: Path) -> None:
    assert load(tmp_path, env={"EVTOPUP__SERVICES__PAGE_PORT": "65535"}).services.page_port == 65535
    assert config_error(tmp_path, env={"EVTOPUP__SERVICES__PAGE_PORT": "65536"}).startswith("services.page_port")


def test_fees_for_a_method_not_offered(tmp_path: Path) -> None:
    text = DEMO_TOML.replace(
        "fees = { wallet = { fixed_minor = 20, rate_bp = 150 } }",
        "fees = { wallet = { fixed_minor = 20, rate_bp = 150 }, bank = { fixed_minor = 1 } }",
    )
    assert text != DEMO_TOML
    message = config_error(tmp_path, text=text)
    assert message.startswith("integrations.sandbox_demo:")
    assert "bank" in message


def test_duplicate_package_ids(tmp_path: Path) -> None:
    text = DEMO_TOML.replace('id = "p25"', 'id = "p10"')
    message = config_error(tmp_path, text=text)
    assert message.startswith("amounts:")
    assert "unique" in message


def test_nothing_to_buy(tmp_path: Path) -> None:
    text = DEMO_TOML.split("[[amounts.packages]]")[0] + "[integrations" + DEMO_TOML.split("[integrations", 1)[1]
    assert load(tmp_path, text=text).amounts.packages == []
    message = config_error(tmp_path, text=text, env={"EVTOPUP__AMOUNTS__CUSTOM_ALLOWED": "false"})
    assert message.startswith("amounts:")


def test_two_active_production_integrations(tmp_path: Path) -> None:
    second = TEST_INTEGRATION.replace("sandbox_test", "sandbox_prod2").replace('"test"', '"production"')
    message = config_error(
        tmp_path,
        text=DEMO_TOML + second,
        env={
            "EVTOPUP__INTEGRATIONS__SANDBOX_PROD2__API_KEY": "second-integration-api-key",
            "EVTOPUP__INTEGRATIONS__SANDBOX_PROD2__WEBHOOK_SECRET": "second-integration-webhook-secret",
        },
    )
    assert "exactly one active production integration" in message


def test_second_production_integration_may_be_inactive(tmp_path: Path) -> None:
    second = (
        TEST_INTEGRATION.replace("sandbox_test", "sandbox_prod2")
        .replace('"test"', '"production"')
        .replace("active = true", "active = false")
    )
    settings = load(
        tmp_path,
        text=DEMO_TOML + second,
        env={
            "EVTOPUP__INTEGRATIONS__SANDBOX_PROD2__API_KEY": "second-integration-api-key",
            "EVTOPUP__INTEGRATIONS__SANDBOX_PROD2__WEBHOOK_SECRET": "second-integration-webhook-secret",
        },
    )
    assert set(settings.integrations) == {"sandbox_demo", "sandbox_prod2"}


def test_integration_id_must_match_the_pattern(tmp_path: Path) -> None:
    text = DEMO_TOML.replace("[integrations.sandbox_demo]", '[integrations."sandbox-demo"]')
    message = config_error(
        tmp_path,
        text=text,
        drop=tuple(k for k in SECRETS if "SANDBOX_DEMO" in k),
        env={
            "EVTOPUP__INTEGRATIONS__SANDBOX-DEMO__API_KEY": "hyphen-integration-api-key",
            "EVTOPUP__INTEGRATIONS__SANDBOX-DEMO__WEBHOOK_SECRET": "hyphen-integration-webhook-secret",
        },
    )
    assert "id 'sandbox-demo' must match" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, dict(SECRETS))
    assert str(missing) in str(info.value)
    assert "cannot read" in str(info.value)


@pytest.mark.parametrize("text", ["[operator\nname = 'x'", "log_level = ", "a = 1\na = 2", 'x = "unterminated'])
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    message = config_error(tmp_path, text=text)
    assert "not valid TOML" in message


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(write_config(tmp_path, ""), {})


# --- which integration serves which user ---------------------------------------------------------


def settings_with_test_integration(tmp_path: Path, **env: str) -> Settings:
    return load(tmp_path, text=DEMO_TOML + TEST_INTEGRATION, env={**TEST_INTEGRATION_SECRETS, **env})


def test_allow_listed_users_get_the_test_integration(tmp_path: Path) -> None:
    settings = settings_with_test_integration(tmp_path)
    assert integration_for_user(settings, "tester-1") == "sandbox_test"
    assert integration_for_user(settings, "tester-2") == "sandbox_test"


@pytest.mark.parametrize("user_id", ["driver-1", "TESTER-1", "tester-", "", "tester-1 "])
def test_everyone_else_gets_production(tmp_path: Path, user_id: str) -> None:
    settings = settings_with_test_integration(tmp_path)
    assert integration_for_user(settings, user_id) == "sandbox_demo"


def test_inactive_test_integration_serves_nobody(tmp_path: Path) -> None:
    settings = settings_with_test_integration(tmp_path, EVTOPUP__INTEGRATIONS__SANDBOX_TEST__ACTIVE="false")
    assert integration_for_user(settings, "tester-1") == "sandbox_demo"


def test_production_integration_test_users_are_not_special(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__TEST_USERS": '["tester-1"]'})
    assert integration_for_user(settings, "tester-1") == "sandbox_demo"


def test_production_is_the_active_one(tmp_path: Path) -> None:
    second = (
        TEST_INTEGRATION.replace("sandbox_test", "sandbox_new")
        .replace('"test"', '"production"')
        .replace("active = true", "active = false")
    )
    env = {
        "EVTOPUP__INTEGRATIONS__SANDBOX_NEW__API_KEY": "second-integration-api-key",
        "EVTOPUP__INTEGRATIONS__SANDBOX_NEW__WEBHOOK_SECRET": "second-integration-webhook-secret",
    }
    before = load(tmp_path, text=DEMO_TOML + second, env=env)
    assert integration_for_user(before, "driver-1") == "sandbox_demo"
    # Swapping the processor is a config change: the other production integration becomes active.
    after = load(
        tmp_path,
        text=DEMO_TOML + second,
        env={
            **env,
            "EVTOPUP__INTEGRATIONS__SANDBOX_NEW__ACTIVE": "true",
            "EVTOPUP__INTEGRATIONS__SANDBOX_DEMO__ACTIVE": "false",
        },
    )
    assert integration_for_user(after, "driver-1") == "sandbox_new"


# --- deployment: demo or production ---------------------------------------------------------------


def test_demo_config_is_a_demo(tmp_path: Path) -> None:
    assert load(tmp_path).deployment == "demo"


@pytest.mark.parametrize("deployment", ['deployment = "production"', ""], ids=["explicit", "default"])
def test_production_refuses_a_sandbox_integration(tmp_path: Path, deployment: str) -> None:
    text = DEMO_TOML.replace('deployment = "demo"', deployment)
    assert text != DEMO_TOML
    message = config_error(tmp_path, text=text)
    assert message.startswith("deployment: ")
    assert "sandbox_demo" in message


def test_production_names_every_sandbox_integration(tmp_path: Path) -> None:
    text = DEMO_TOML.replace('deployment = "demo"', 'deployment = "production"') + TEST_INTEGRATION
    message = config_error(tmp_path, text=text, env=TEST_INTEGRATION_SECRETS)
    assert message.startswith("deployment: ")
    assert "sandbox_demo" in message and "sandbox_test" in message


def test_production_refuses_an_inactive_sandbox_integration_too(tmp_path: Path) -> None:
    # An inactive sandbox can be switched on by one environment variable: it is refused all the same.
    text = DEMO_TOML.replace('deployment = "demo"', 'deployment = "production"') + TEST_INTEGRATION.replace(
        "active = true", "active = false"
    )
    message = config_error(tmp_path, text=text, env=TEST_INTEGRATION_SECRETS)
    assert message.startswith("deployment: ")
    assert "sandbox_test" in message


@pytest.mark.parametrize("value", ["staging", "Demo", "", "test"])
def test_deployment_must_be_demo_or_production(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, text=DEMO_TOML.replace('deployment = "demo"', f'deployment = "{value}"'))
    assert message.startswith("deployment: ")


def test_demo_with_a_test_sandbox_integration_is_accepted(tmp_path: Path) -> None:
    settings = load(tmp_path, text=DEMO_TOML + TEST_INTEGRATION, env=TEST_INTEGRATION_SECRETS)
    assert settings.deployment == "demo"
    assert set(settings.integrations) == {"sandbox_demo", "sandbox_test"}


@pytest.mark.parametrize("kind", ["ocpi", "LEDGER", ""])
def test_csms_kind_other_than_ledger_is_refused(tmp_path: Path, kind: str) -> None:
    # Only "ledger" exists today; the demo rule below is what keeps a demo on it once others do.
    message = config_error(tmp_path, env={"EVTOPUP__CSMS__KIND": kind})
    assert message.startswith("csms.kind: ")


def _with(settings: Settings, **fields: object) -> dict[str, object]:
    """The validated fields of ``settings`` with some replaced, to validate again as a whole."""
    return {**dict(settings), **fields}


def _real_processor(settings: Settings) -> IntegrationSettings:
    """An integration of a processor that is not the sandbox. No such processor exists yet, so it is
    built without validation; the whole-file rules are what is under test."""
    demo = settings.integrations["sandbox_demo"]
    return IntegrationSettings.model_construct(**{**dict(demo), "processor": "realpay", "environment": "test"})


def test_demo_refuses_a_processor_other_than_the_sandbox(tmp_path: Path) -> None:
    settings = load(tmp_path)
    integrations = {**settings.integrations, "realpay_main": _real_processor(settings)}
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(_with(settings, integrations=integrations))
    message = str(info.value)
    assert 'deployment: "demo" runs only sandbox integrations' in message
    assert "realpay_main" in message


def test_production_accepts_a_processor_other_than_the_sandbox(tmp_path: Path) -> None:
    settings = load(tmp_path)
    real = _real_processor(settings).model_copy(update={"environment": "production"})
    validated = Settings.model_validate(_with(settings, deployment="production", integrations={"realpay_main": real}))
    assert validated.deployment == "production"
    assert list(validated.integrations) == ["realpay_main"]


def test_demo_refuses_a_csms_other_than_the_ledger(tmp_path: Path) -> None:
    settings = load(tmp_path)
    other = CsmsSettings.model_construct(kind="ocpi")  # no such kind yet: built without validation
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(_with(settings, csms=other))
    assert 'deployment: "demo" credits only the built-in ledger' in str(info.value)


# --- payment methods ------------------------------------------------------------------------------


def _paypal(methods: list[str]) -> dict[str, object]:
    return {
        "processor": "paypal",
        "methods": methods,
        "webhook_id": "8PT597110X687430LKGECATA",
        "client_id": "c" * 24,
        "client_secret": "s" * 24,
    }


def test_an_integration_offers_only_methods_its_processor_takes() -> None:
    from services.payments.processors.paypal.config import PayPalSettings

    assert PayPalSettings.model_validate(_paypal(["paypal"])).methods == ["paypal"]
    with pytest.raises(ValidationError, match=r"paypal does not take \['card'\]; it takes \['paypal'\]"):
        PayPalSettings.model_validate(_paypal(["paypal", "card"]))


def test_every_processor_names_the_methods_it_takes() -> None:
    """The page shows a method by the processor's name for it (or the catalogue's translation);
    only the sandbox, which takes money from nobody, takes any method id."""
    from services.payments.processors import ADAPTERS

    for name, adapter in ADAPTERS.items():
        names = adapter.config_type.payment_methods
        assert (name == "sandbox") == (not names), name
        assert all(method.name.strip() and method.kind for method in names.values()), name


# --- reloading [integrations] ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["page", "payments", "crediting", None])
def test_a_reload_takes_added_and_changed_integrations(tmp_path: Path, service: str | None) -> None:
    current = load_settings(write_config(tmp_path), SECRETS, service=service)
    text = DEMO_TOML + TEST_INTEGRATION
    new = reloaded_settings(
        current, write_config(tmp_path, text), {**SECRETS, **TEST_INTEGRATION_SECRETS}, service=service
    )
    assert changed_integrations(current, new) == {"sandbox_test"}
    held = current.integrations
    apply_reload(current, new)
    assert current.integrations is held  # in place: whoever holds the settings sees the change
    assert set(current.integrations) == {"sandbox_demo", "sandbox_test"}
    rotated = reloaded_settings(
        current,
        write_config(tmp_path, text),
        {
            **SECRETS,
            **TEST_INTEGRATION_SECRETS,
            "EVTOPUP__INTEGRATIONS__SANDBOX_TEST__API_KEY": "a-rotated-api-key-value",
        },
        service=service,
    )
    # Another service's secret is withheld, so its rotation is not this service's change.
    assert changed_integrations(current, rotated) == ({"sandbox_test"} if service in ("payments", None) else set())


def test_a_reload_with_nothing_changed_changes_nothing(tmp_path: Path) -> None:
    current = load_settings(write_config(tmp_path), SECRETS, service="page")
    assert (
        changed_integrations(current, reloaded_settings(current, write_config(tmp_path), SECRETS, service="page"))
        == set()
    )


def _current_with_test_integration(tmp_path: Path) -> Settings:
    env = {**SECRETS, **TEST_INTEGRATION_SECRETS}
    return load_settings(write_config(tmp_path, DEMO_TOML + TEST_INTEGRATION), env, service="payments")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            DEMO_TOML.replace('name = "Demo Charging"', 'name = "Other Charging"') + TEST_INTEGRATION,
            "operator: changed, and only [integrations] is reloaded; restart to apply",
        ),
        (DEMO_TOML, "integrations: ['sandbox_test'] removed; set active = false instead"),
        (
            DEMO_TOML
            + TEST_INTEGRATION.replace(
                'environment = "test"\nactive = true', 'environment = "production"\nactive = false'
            ),
            "integrations.sandbox_test.environment: cannot change under the payments made with it",
        ),
        (DEMO_TOML + TEST_INTEGRATION.replace("methods = [", "methods = 3 #"), "integrations.sandbox_test.methods"),
    ],
)
def test_a_reload_refuses_what_a_running_service_cannot_take(tmp_path: Path, text: str, message: str) -> None:
    current = _current_with_test_integration(tmp_path)
    before = dict(current.integrations)
    # An integration removed from the file has its secrets removed from the environment too.
    env = {**SECRETS, **TEST_INTEGRATION_SECRETS} if "sandbox_test" in text else SECRETS
    with pytest.raises(ConfigError) as refused:
        reloaded_settings(current, write_config(tmp_path, text), env, service="payments")
    assert str(refused.value).startswith(message)
    assert current.integrations == before


def test_every_language_the_page_speaks_is_offered_unless_the_operator_chooses(tmp_path: Path) -> None:
    from services.page.i18n import available_locales

    every = load(tmp_path, env={"EVTOPUP__OPERATOR__LOCALES": "[]"}).operator.locales
    assert every == available_locales() and {"ar", "de", "sw", "pt-BR", "es-MX"} <= set(every) and len(every) >= 30
