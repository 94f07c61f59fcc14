"""``scripts/new-processor``: on a copy of the repository, a new processor made from the template is
importable and registered, changes nothing outside its own package but the one line in
``PROCESSOR_PACKAGES`` (and, on the test side, its simulator, its two tests and two lines of the
conformance suite), and passes its wire and adapter tests, the boundary test, ruff and mypy there as
it is. An existing or invalid name is refused and writes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAME = "acmepay"
PACKAGE = Path("services/payments/processors") / NAME
NEW_TEST_FILES = {
    Path(f"tests/simulators/{NAME}_sim.py"),
    Path(f"tests/unit/test_{NAME}_wire.py"),
    Path(f"tests/integration/test_{NAME}_adapter.py"),
}
REGISTRY = Path("services/payments/processors/__init__.py")
CONFORMANCE = Path("tests/conformance/test_processors.py")


def _files(root: Path, *tops: str) -> dict[Path, bytes]:
    return {
        path.relative_to(root): path.read_bytes()
        for top in tops
        for path in (root / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _added_lines(before: bytes, after: bytes) -> list[str]:
    """The lines ``after`` has beyond ``before``, provided it only adds lines (else fails)."""
    old, new = before.decode().splitlines(), after.decode().splitlines()
    added, i = [], 0
    for line in new:
        if i < len(old) and line == old[i]:
            i += 1
        else:
            added.append(line)
    assert i == len(old), "lines were changed or removed, not only added"
    return added


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")
    for top in ("services", "shared", "tests", "scripts"):
        shutil.copytree(REPO / top, root / top, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def run(copy: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def generated(copy: Path) -> tuple[dict[Path, bytes], dict[Path, bytes], str]:
    """The copy's files before and after ``scripts/new-processor acmepay``, and what it printed."""
    before = _files(copy, "services", "shared", "tests")
    made = run(copy, "scripts/new-processor", NAME)
    assert made.returncode == 0, made.stdout + made.stderr
    return before, _files(copy, "services", "shared", "tests"), made.stdout


def test_outside_its_package_a_new_processor_changes_one_registration_line(
    generated: tuple[dict[Path, bytes], dict[Path, bytes], str],
) -> None:
    before, after, _ = generated
    production = ("services", "shared")
    new = {p for p in after.keys() - before.keys() if p.parts[0] in production}
    assert {p for p in new if PACKAGE not in p.parents} == set()
    assert {p.name for p in new} == {"__init__.py", "config.py", "wire.py", "adapter.py"}
    assert before.keys() - after.keys() == set()
    changed = {p for p in before.keys() & after.keys() if before[p] != after[p] and p.parts[0] in production}
    assert changed == {REGISTRY}
    assert _added_lines(before[REGISTRY], after[REGISTRY]) == [f'    "{NAME}",']


def test_on_the_test_side_a_simulator_two_tests_and_two_conformance_lines(
    generated: tuple[dict[Path, bytes], dict[Path, bytes], str],
) -> None:
    before, after, printed = generated
    assert {p for p in after.keys() - before.keys() if p.parts[0] == "tests"} == NEW_TEST_FILES
    changed = {p for p in before.keys() & after.keys() if before[p] != after[p] and p.parts[0] == "tests"}
    assert changed == {CONFORMANCE}
    assert _added_lines(before[CONFORMANCE], after[CONFORMANCE]) == [
        f"from tests.simulators.{NAME}_sim import AcmepaySimulator",
        f'    "{NAME}": Case(AcmepaySimulator, "EUR", "card"),',
    ]
    for path in NEW_TEST_FILES | {PACKAGE / "adapter.py"}:
        text = after[path].decode()
        assert "emplate" not in text.replace("# TEMPLATE:", ""), path  # every name renamed, the notes kept
    assert "# TEMPLATE:" in after[PACKAGE / "wire.py"].decode()
    assert "TEMPLATE:" in printed and f"tests/unit/test_{NAME}_wire.py" in printed


def test_the_new_processor_imports_is_registered_and_passes_its_tests_there(
    copy: Path, generated: tuple[dict[Path, bytes], dict[Path, bytes], str]
) -> None:
    check = run(
        copy,
        "-c",
        "import services; from services.payments.processors import ADAPTERS, PROCESSOR_PACKAGES;"
        f"from services.payments.processors.{NAME} import Adapter;"
        f"assert services.__file__.startswith({str(copy)!r}), services.__file__;"
        f"assert {NAME!r} in PROCESSOR_PACKAGES and ADAPTERS[{NAME!r}] is Adapter, ADAPTERS;"
        "print(Adapter.__name__, Adapter.config_type.__name__)",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.split() == ["AcmepayAdapter", "AcmepaySettings"]
    boundary = (
        "tests/unit/test_processor_boundaries.py::"
        f"test_a_processor_is_named_outside_its_package_only_by_its_registration_line[{NAME}]"
    )
    tests = run(
        copy,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rA",
        f"tests/unit/test_{NAME}_wire.py",
        f"tests/integration/test_{NAME}_adapter.py",
        boundary,
        "tests/conformance/test_processors.py::test_every_real_processor_has_a_conformance_case",
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert f"PASSED {boundary}" in tests.stdout
    assert f"PASSED tests/integration/test_{NAME}_adapter.py::test_disputes_open_and_settle" in tests.stdout


def test_the_copies_are_ruff_and_mypy_clean(
    copy: Path, generated: tuple[dict[Path, bytes], dict[Path, bytes], str]
) -> None:
    files = [str(PACKAGE), *map(str, NEW_TEST_FILES), str(CONFORMANCE), "scripts/new-processor"]
    ruff = run(copy, "-m", "ruff", "check", "--no-cache", *files)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    formatted = run(copy, "-m", "ruff", "format", "--check", "--no-cache", *files[:-2])
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    mypy = run(copy, "-m", "mypy", "--strict", "--cache-dir", str(copy / ".mypy_cache"), str(PACKAGE), timeout=120)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr


@pytest.mark.parametrize("name", [NAME, "stripe", "Acme", "9pay", "acme-pay", "a", "class", "template", "base"])
def test_an_existing_or_invalid_name_is_refused_and_nothing_written(
    copy: Path, generated: tuple[dict[Path, bytes], dict[Path, bytes], str], name: str
) -> None:
    _, after, _ = generated
    refused = run(copy, "scripts/new-processor", name)
    assert refused.returncode == 2 and "new-processor:" in refused.stderr, refused.stdout + refused.stderr
    assert _files(copy, "services", "shared", "tests") == after
