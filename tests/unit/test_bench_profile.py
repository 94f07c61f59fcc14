"""bench/profile.py: a process's py-spy samples summarised by library and by our own functions, with
the leaves where a saturated process only waits for a core left out."""

from __future__ import annotations

from pathlib import Path

from bench.profile import summarize

HANDLER = "receive_webhook (services/payments/webhooks.py:90)"
SERVICE = "apply_processor_event (services/payments/service.py:164)"


def test_samples_are_shared_by_library_and_our_functions(tmp_path: Path) -> None:
    samples = tmp_path / "payments.txt"
    samples.write_text(
        "\n".join(
            [
                f"main (services/cli.py:475);{HANDLER};{SERVICE};Connection.execute (asyncpg/connection.py:377) 6",
                f"main (services/cli.py:475);{HANDLER};dumps (json/__init__.py:231) 2",
                f"main (services/cli.py:475);{HANDLER};BaseModel.__init__ (pydantic/main.py:280) 1",
                "main (services/cli.py:475);Handle._run (asyncio/events.py:80) 1",
                # Preempted in a socket write: waiting, not working.
                f"main (services/cli.py:475);{HANDLER};_SelectorSocketTransport.write"
                " (asyncio/selector_events.py:1057) 30",
            ]
        )
        + "\n"
    )
    summary = summarize(samples, top=3)
    assert summary["samples"] == 10
    assert summary["by_library"] == {"asyncpg": 60.0, "json": 20.0, "pydantic": 10.0, "event loop and the rest": 10.0}
    # Inclusive, line numbers folded: the handler is on 9 of the 10 working samples.
    assert summary["our_functions"] == {
        "main (services/cli.py)": 100.0,
        "receive_webhook (services/payments/webhooks.py)": 90.0,
        "apply_processor_event (services/payments/service.py)": 60.0,
    }


def test_a_process_that_never_worked_has_no_summary(tmp_path: Path) -> None:
    samples = tmp_path / "idle.txt"
    samples.write_text("main (services/cli.py:475);EpollSelector.select (selectors.py:468) 40\n")
    assert summarize(samples) == {}
