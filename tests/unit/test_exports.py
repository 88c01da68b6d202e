"""``__all__`` exports only what a module defines (or re-exports from the suite), never a standard-library or
third-party name it merely imported (``from dataclasses import replace`` listed in ``__all__`` makes
``from module import *`` hand out ``dataclasses.replace`` as if it were the suite's)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import interp

PACKAGE = Path(interp.__file__).resolve().parent
#: The recipes live at the repository root and are installed as ``interp.analyses``.
RECIPES = PACKAGE.parent / "analyses"


def exported(tree: ast.Module) -> list[str] | None:
    """The literal ``__all__`` of a module (None when it has none)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def _statements(body: list[ast.stmt]):
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", ())),
                          getattr(node, "finalbody", [])):
                yield from _statements(block)


def suite_names(tree: ast.Module) -> set[str]:
    """Top-level names a module defines itself or imports from the suite (``interp…``, relative imports)."""
    names: set[str] = set()
    for node in _statements(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == "interp"):
            names |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.asname for alias in node.names if alias.asname and alias.name.split(".")[0] == "interp"}
    return names


def foreign_exports(source: str) -> list[str]:
    """Names in ``__all__`` that the module neither defines nor re-exports from the suite."""
    tree = ast.parse(source)
    return [name for name in exported(tree) or [] if name not in suite_names(tree)]


def test_the_check_flags_a_standard_library_name_and_accepts_definitions_and_suite_re_exports():
    source = ("from dataclasses import dataclass, replace\nfrom interp.errors import OptionError\n"
              "import numpy as np\nLIMIT: int = 3\n\n@dataclass\nclass Spec:\n    x: int\n\n"
              "def run():\n    pass\n\n__all__ = ['LIMIT', 'OptionError', 'Spec', 'np', 'replace', 'run']\n")
    assert foreign_exports(source) == ["np", "replace"]


def test_every_all_under_interp_lists_only_the_suites_own_names():
    files = sorted(PACKAGE.rglob("*.py")) + sorted(RECIPES.rglob("*.py"))
    checked, problems = [], {}
    for path in files:
        source = path.read_text(encoding="utf-8")
        if exported(ast.parse(source)) is None:
            continue
        checked.append(path.relative_to(PACKAGE.parent).as_posix())
        foreign = foreign_exports(source)
        if foreign:
            problems[checked[-1]] = foreign
    assert not problems, f"__all__ lists names the module only imported: {problems}"
    # not vacuous: the public modules with an __all__ were all read
    assert {"interp/__init__.py", "interp/models/__init__.py", "interp/backends/__init__.py",
            "interp/attribution/language_steering.py"} <= set(checked)


@pytest.mark.parametrize("module", ["interp", "interp.models", "interp.backends", "interp.steering",
                                    "interp.attribution.language_steering"])
def test_every_exported_name_exists(module):
    import importlib

    loaded = importlib.import_module(module)
    assert [name for name in loaded.__all__ if not hasattr(loaded, name)] == []
