"""services/integrations.py: which integrations take new top-ups, which drain, which are retired,
and which payments still need though the configuration no longer names them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.integrations import Activity, integration_states
from shared.settings import Settings, load_settings
from tests.unit.test_settings import DEMO_TOML, SECRETS, TEST_INTEGRATION, TEST_INTEGRATION_SECRETS


def settings(tmp_path: Path, test_active: bool = True) -> Settings:
    text = DEMO_TOML + TEST_INTEGRATION.replace("active = true", f"active = {str(test_active).lower()}")
    path = tmp_path / "evtopup.toml"
    path.write_text(text)
    return load_settings(path, {**SECRETS, **TEST_INTEGRATION_SECRETS})


def test_states(tmp_path: Path) -> None:
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    cases = [
        # (test integration active, its activity) → its state
        (True, Activity(), "active"),
        (True, Activity(open_payments=3), "active"),
        (False, Activity(open_payments=2, last_payment_at=at), "draining"),
        (False, Activity(under_review=1), "draining"),
        (False, Activity(refunds_waiting=1), "draining"),
        (False, Activity(last_payment_at=at), "retired"),
        (False, Activity(), "retired"),
    ]
    for active, activity, expected in cases:
        states = {
            s.integration_id: s for s in integration_states(settings(tmp_path, active), {"sandbox_test": activity})
        }
        assert states["sandbox_test"].state == expected, (active, activity)
        assert states["sandbox_test"].activity == activity
        assert states["sandbox_demo"].state == "active"


def test_an_integration_payments_need_but_the_configuration_lost_is_missing(tmp_path: Path) -> None:
    activity = {"stripe_old": Activity(open_payments=1), "paypal_gone": Activity()}
    states = integration_states(settings(tmp_path), activity)
    missing = [s for s in states if s.state == "missing"]
    assert [(s.integration_id, s.processor) for s in missing] == [("stripe_old", None)]
    assert "paypal_gone" not in {s.integration_id for s in states}  # nothing open: nothing to say


def test_the_lines_say_what_is_still_open(tmp_path: Path) -> None:
    activity = {"sandbox_test": Activity(open_payments=2, refunds_waiting=1)}
    [_, test] = integration_states(settings(tmp_path, False), activity)
    assert "draining" in test.line() and "2 open payments, 1 refunds waiting; last payment never" in test.line()
    assert '"state": "draining"' in test.as_json()
