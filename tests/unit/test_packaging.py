"""The wheel: everything under ``interp`` (the recipes in ``analyses/`` installed as ``interp.analyses``), no
top-level package but ``interp``; installed on its own, the registry finds every recipe. Built offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIP_ENV = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (offline, no build isolation) from a copy of the source tree."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("interp", "analyses"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = root / "dist"
    process = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, env=PIP_ENV, timeout=600)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    (built,) = out.glob("interp-*.whl")
    return built


def _sources(folder: Path, prefix: str) -> set[str]:
    return {prefix + p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def test_wheel_holds_the_recipes_as_interp_analyses_and_nothing_at_the_top_but_interp(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names}
    assert "analyses" not in top
    assert {t for t in top if not t.endswith(".dist-info")} == {"interp"}
    assert {"interp/analyses/__init__.py", "interp/analyses/attention_sinks.py"} <= names
    assert "interp/py.typed" in names, "the PEP 561 marker interp/py.typed is left out of the wheel"
    missing = (_sources(REPO / "interp", "interp/") | _sources(REPO / "analyses", "interp/analyses/")) - names
    assert not missing, f"source files left out of the wheel: {sorted(missing)}"
    data = {f"interp/{p.relative_to(REPO / 'interp').as_posix()}" for p in (REPO / "interp" / "data").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert data and not data - names, f"shipped data left out of the wheel: {sorted(data - names)}"


def test_installed_wheel_registers_every_analysis_without_a_top_level_analyses_package(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, env=PIP_ENV, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    assert not (target / "analyses").exists() and (target / "interp" / "analyses" / "__init__.py").is_file()
    code = ("import sys, interp, interp.analyses, interp.registry as r\n"
            "print(interp.__file__); print(interp.analyses.__file__); print(','.join(r.analysis_names()))\n"
            "print('analyses' in sys.modules)\n")
    env = {**PIP_ENV, "PYTHONPATH": str(target)}
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    package, recipes, names, top_level = process.stdout.strip().splitlines()
    assert Path(package).is_relative_to(target) and Path(recipes).is_relative_to(target)
    from interp.registry import analysis_names

    assert names.split(",") == analysis_names()
    assert top_level == "False"
