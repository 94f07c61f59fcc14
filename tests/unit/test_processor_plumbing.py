"""The plumbing every adapter shares (``services/payments/processors/base.py``): header lookup,
redaction of the processor's words, and what a failed answer means."""

from __future__ import annotations

import re

import pytest

from services.payments.processors.base import (
    ProcessorRefused,
    ProcessorUnavailable,
    answer_error,
    header,
    redact,
)


def test_a_header_is_found_whatever_its_case_in_a_plain_dict() -> None:
    headers = {"X-Signature": "abc"}
    assert header(headers, "X-Signature") == "abc"
    assert header(headers, "x-signature") == "abc"
    assert header(headers, "X-Other") is None


def test_redact_cuts_secrets_and_credential_shapes_then_the_length() -> None:
    shape = re.compile(r"\bsk_[A-Za-z0-9_*]+")
    text = "bad key s3cr3t, also sk_live_****1234 and sk_test_abc"
    assert redact(text, ["s3cr3t", ""], shape) == "bad key [redacted], also [redacted] and [redacted]"
    assert redact("x" * 500, []) == "x" * 200
    assert redact("x" * 500, [], limit=None) == "x" * 500


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_is_unavailable_and_never_quotes_the_processor(status: int) -> None:
    error = answer_error("acme", "POST /v1/x", status, "the key sk_live_123 is wrong", code="auth")
    assert isinstance(error, ProcessorUnavailable)
    assert str(error) == f"acme refused the API key for POST /v1/x: {status}"


@pytest.mark.parametrize("status", [409, 429, 500, 503, 302])
def test_retryable_server_and_unfollowed_answers_are_unavailable(status: int) -> None:
    error = answer_error("acme", "GET /v1/x", status, "try later", code="busy")
    assert isinstance(error, ProcessorUnavailable)
    assert str(error) == f"acme answered {status} (busy) to GET /v1/x"
    assert (
        str(answer_error("acme", "GET /v1/x", status, "try later")) == f"acme answered {status} to GET /v1/x: try later"
    )


def test_other_4xx_are_refused_with_the_processors_words() -> None:
    error = answer_error("acme", "POST /v1/refunds", 400, "too much", code="amount_too_large")
    assert isinstance(error, ProcessorRefused)
    assert str(error) == "acme refused POST /v1/refunds (400 amount_too_large): too much"
    assert str(answer_error("acme", "POST /v1/refunds", 422, "")) == "acme refused POST /v1/refunds (422)"


def test_a_processor_may_retry_more_statuses() -> None:
    assert isinstance(answer_error("acme", "x", 423, "locked"), ProcessorRefused)
    assert isinstance(answer_error("acme", "x", 423, "locked", retryable={423}), ProcessorUnavailable)
    # 401/403 stay credential failures, whatever the processor retries.
    assert "refused the access token" in str(answer_error("acme", "x", 401, retryable={401}, credential="access token"))
