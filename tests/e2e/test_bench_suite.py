"""`make bench`'s suite as a smoke run (``--quick``: every size small): the floor and the project measured
back to back, one table, and one JSON result with every figure, each a positive number, and the
money adding up in every run. The figures themselves mean nothing at these sizes.

The floor lives outside this repository (``EVTOPUP_FLOOR_DIR``, by default ../shared/floor): skipped
where it is not there. It runs in
its own venv (``make .venv-floor/.installed``: its pinned packages and uvloop) if that is built, and
otherwise in this one, which has its packages but uvloop (the floor then runs on asyncio's loop):
the test builds nothing itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

FLOOR_DIR = Path(os.environ.get("EVTOPUP_FLOOR_DIR") or REPO.parent / "shared" / "floor")
FLOOR_PYTHON = REPO / ".venv-floor" / "bin" / "python"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (FLOOR_DIR / "bare_pipeline.py").exists(), reason=f"no floor in {FLOOR_DIR}"),
]

FIGURES = [
    "burst credits/s",
    "burst webhooks answered/s",
    "steady p99 time to credit, ms",
    "steady p99 webhook answered, ms",
    "orders with checkout/s",
    *(f"RSS after burst, MB: {service}" for service in ("page", "payments", "crediting")),
    "credits/s spread, 10 vs 1000 users, %",
    "credits/s spread, empty vs 2000 rows, %",
    "credits/s, 2 replicas / 1",
    *(
        f"burst CPU-ms per top-up: {process}"
        for process in ("page", "payments", "crediting", "postgres", "rabbitmq", "bench", "machine")
    ),
    "money adds up in every run",
]
# What is measured between two throughputs can be zero; everything else is more.
MAY_BE_ZERO = {"credits/s spread, 10 vs 1000 users, %", "credits/s spread, empty vs 2000 rows, %"}


@pytest.mark.timeout(480)
def test_quick_suite_gives_every_figure_and_the_money_adds_up() -> None:
    python = FLOOR_PYTHON if FLOOR_PYTHON.exists() else Path(sys.executable)
    completed = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--quick", "--floor-python", str(python), "--floor-dir", str(FLOOR_DIR)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "figure" in completed.stdout and "targets met:" in completed.stdout
    path = Path(completed.stdout.rsplit("written to ", 1)[1].strip())
    try:
        result = json.loads(path.read_text())
    finally:
        path.unlink()

    figures = {figure["figure"]: figure for figure in result["figures"]}
    assert list(figures) == FIGURES
    for name, figure in figures.items():
        if name == "money adds up in every run":
            assert figure["met"] is True, figure
        elif name in MAY_BE_ZERO:
            assert figure["project"] >= 0, figure
        else:
            assert figure["project"] > 0, figure
    for name in ("burst credits/s", "burst webhooks answered/s", "steady p99 time to credit, ms"):
        assert figures[name]["floor"] > 0 and figures[name]["ratio"] > 0, figures[name]

    assert all(run["correct"] for run in result["floor"].values()), result["floor"]
    assert set(result["project"]) == {"burst", "steady", "few_users", "many_users", "preloaded", "replicas"}
    for run in result["project"].values():
        assert run["money_ok"] and run["credited_minor"] == run["expected_minor"] > 0, run
    assert result["project"]["replicas"]["rss_mb"].keys() == {
        "page",
        "payments",
        "crediting",
        "page-2",
        "payments-2",
        "crediting-2",
    }
    assert result["machine"]["nproc"] > 0 and result["machine"]["postgresql"]
