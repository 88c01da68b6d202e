"""Benchmark: what a remote (NDIF) run sends and brings back, per analysis, on smollm2-135m.

Each analysis runs on the local nnsight backend and on a remote model whose requests go, through nnsight's own
``RemoteBackend`` request path, to the stand-in NDIF server (``tests/ndif_server.py``: a separate process in
which ``interp`` cannot be imported, serving the same checkpoint). The frames must be equal. The table gives
the requests, the bytes sent and received (compressed, as on the wire), the weight bytes read on first use,
and the wall times (the stand-in runs on the same CPU, so the remote time is the local compute plus the
serialization, not a network).

Reductions happen on the server inside the hooks, so what comes back is the hooks' statistics, not the
activations they read: for attention-sinks that is compared with the bytes of the activations its hooks read
(every layer's pattern and residual stream, float32, at the padded batch shapes).

    python benchmarks/bench_remote.py            # six analyses (the ones a remote model runs)
    python benchmarks/bench_remote.py --quick    # attention-sinks and attention-sparsity, 16 prompts (< 3 min)

The last lines are ``RESULT remote_frames_equal <n> analyses target >= <n>`` and
``RESULT remote_sinks_received_over_activations <x> ratio target <= 0.05``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spin-waiting skews 2-thread timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.ndif_standin
from _common import print_table, result_line  # noqa: E402

import interp  # noqa: E402
from interp.data import default_prompts  # noqa: E402

MODEL = "smollm2-135m"


def cases(quick: bool) -> list[tuple[str, list[str] | None, dict]]:
    prompts = default_prompts()[:16] if quick else default_prompts()
    out = [("attention-sinks", prompts, {}),
           ("attention-sparsity", prompts, {"max_tokens": 96, "window": 16, "rank_prompts": 2, "min_keys": 8})]
    if not quick:
        out += [
            ("svd-channels", None, {"baseline_samples": 10, "sequences": 2, "half_length": 10, "heads": 2,
                                    "random_trials": 1}),
            ("sink-streaming", None, {"window": 16, "ks": "1", "controls": "newline", "max_tokens": 48, "queries": 2}),
            ("head-atlas", prompts[:8], {}),
            ("safety-heads", None, {"n_attribution": 3, "n_eval": 4, "n_harmless": 2, "max_new_tokens": 8,
                                    "random_groups": 1, "matched_groups": 1, "steps": 1, "pool": 0,
                                    "compare_base": ""}),
        ]
    return out


def sinks_activation_bytes(lm: interp.LoadedModel, prompts: list[str], batch_size: int = 8,
                           max_tokens: int | None = None) -> int:
    """Bytes of what attention-sinks' hooks read: every layer's pattern and residual stream (float32)."""
    from interp.probes import batches, tokenize_prompts

    rows = tokenize_prompts(lm, prompts, max_tokens=max_tokens)
    total = 0
    for batch in batches(lm, rows, batch_size):
        b, width = batch.tokens.shape
        total += b * lm.n_layers * (lm.n_heads * width * width + width * lm.d_model) * 4
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two analyses, 16 prompts (< 3 min)")
    args = parser.parse_args()
    try:
        import nnsight.modeling.huggingface as nnsight_hf
    except ImportError:
        print("nnsight is not installed: pip install 'interp[nnsight]'")
        return 1
    from interp.models.gguf import smollm2_folder
    from tests.ndif_standin import stand_in

    connection = interp.Remote(transport=stand_in(smollm2_folder()))
    remote = interp.load_model(MODEL, backend="nnsight", remote=connection)
    nnsight_hf._ID_CACHE[connection.model_id] = connection.model_id  # offline: the hub is not asked
    local = interp.load_model(MODEL, backend="nnsight")
    rows, equal, sinks_ratio = [], 0, float("nan")
    for name, prompts, options in cases(args.quick):
        started = time.perf_counter()
        mine = interp.run(name, local, prompts, progress=False, **options)
        local_s = time.perf_counter() - started
        started = time.perf_counter()
        theirs = interp.run(name, remote, prompts, progress=False, **options)
        remote_s = time.perf_counter() - started
        same = theirs.frame.equals(mine.frame)
        equal += same
        moved = theirs.metadata["remote"]
        rows.append([name, moved["requests"], f"{moved['bytes_sent'] / 1e6:.3f}", f"{moved['bytes_received'] / 1e6:.3f}",
                     f"{moved['weight_bytes_received'] / 1e6:.1f}", f"{local_s:.1f}", f"{remote_s:.1f}",
                     "yes" if same else "NO"])
        if name == "attention-sinks":
            read = sinks_activation_bytes(local, list(prompts or []))
            sinks_ratio = moved["bytes_received"] / read
            print(f"attention-sinks: the hooks read {read / 1e6:.1f} MB of activations; "
                  f"{moved['bytes_received'] / 1e6:.3f} MB came back", flush=True)
    print_table([tuple(row) for row in rows],
                ("analysis", "requests", "sent MB", "received MB", "weights MB", "local s", "remote s", "equal"))
    print(result_line("remote_frames_equal", equal, "analyses", ">=", len(rows)))
    print(result_line("remote_sinks_received_over_activations", sinks_ratio, "ratio", "<=", 0.05))
    return 0 if equal == len(rows) and sinks_ratio <= 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
