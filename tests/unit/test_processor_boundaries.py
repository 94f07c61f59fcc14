"""Everything a processor does lives in its package: outside ``services/payments/processors/<name>/``
no code names a processor, except the one line that registers it (``PROCESSOR_PACKAGES``). Comments
and docstrings may mention processors as examples; code, SQL, templates and deployment files may not.
This is what "a new processor needs one registration line" means, checked for every processor."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from services.payments.processors import PROCESSOR_PACKAGES

REPO = Path(__file__).resolve().parents[2]
PROCESSORS_DIR = REPO / "services" / "payments" / "processors"
REGISTRY = PROCESSORS_DIR / "__init__.py"
REAL_PROCESSORS = [name for name in PROCESSOR_PACKAGES if name != "sandbox"]  # the demo's own, built in


def _outside_packages(pattern: str) -> list[Path]:
    packages = {PROCESSORS_DIR / name for name in PROCESSOR_PACKAGES}
    return sorted(
        path
        for root in ("services", "shared", "deploy")
        for path in (REPO / root).rglob(pattern)
        if not any(package in path.parents for package in packages)
        and "__pycache__" not in path.parts
        and ".test." not in path.name  # test data (promtool's alert tests) may name example integrations
    )


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def code_words(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every identifier and string constant of the module that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = _docstrings(tree)
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            words.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            words.append((node.lineno, node.attr))
        elif isinstance(node, ast.alias):
            words.append((node.lineno, node.name))
    return words


@pytest.mark.parametrize("processor", REAL_PROCESSORS)
def test_a_processor_is_named_outside_its_package_only_by_its_registration_line(processor: str) -> None:
    named = re.compile(rf"(?<![a-z]){re.escape(processor)}(?![a-z])", re.IGNORECASE)
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _outside_packages("*.py")
        for line, text in code_words(path)
        if named.search(text)
    ]
    found += [
        f"{path.relative_to(REPO)}:{number}"
        for suffix in ("*.sql", "*.html", "*.yml", "*.yaml", "*.json", "*.toml")
        for path in _outside_packages(suffix)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if named.search(line)
    ]
    [registration] = [
        n for n, line in enumerate(REGISTRY.read_text().splitlines(), 1) if line.strip() == f'"{processor}",'
    ]
    assert found == [f"{REGISTRY.relative_to(REPO)}:{registration}"]


def test_the_check_sees_a_processor_named_in_code(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""Mentions Stripe in a docstring."""\nX = {"stripe": 1}  # and a comment: stripe\n')
    assert [text for _, text in code_words(module) if "stripe" in text.lower()] == ["stripe"]
