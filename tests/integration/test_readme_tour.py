"""The README's Python tour runs as written, on the bundled model, in a fresh process.

The block is taken from README.md itself (the first ``python`` fence), so the README cannot drift from the
API without this test failing. Figures render to JSON (no browser) and the reports land in a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_python_tour_runs_as_written(gemma, tmp_path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README.md has no python block"
    tour = blocks[0]
    probe = tour + "\nprint('TOUR', repr(out.texts[0])[:60], out.coherent_success_rate)\n"
    env = {**os.environ, "PLOTLY_RENDERER": "json", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TOUR" in done.stdout
    for written in re.findall(r'"(reports/[^"]+\.html)"', tour):
        page = tmp_path / written
        assert page.is_file() and page.stat().st_size > 10_000, written
