"""Benchmark: the same analyses on the hooked, bridge and nnsight backends, in one process, on gemma-3-270m.

For each analysis every backend runs the same prompts (one untimed warm-up, then the median of the timed
rounds); the hooked and bridge frames must agree (the tolerances of ``tests/integration/test_backends_real.py``),
and the nnsight frame must agree with the bridge backend's without weight processing (nnsight runs the raw
checkpoint; ``tests/integration/test_nnsight_real.py``). Then the exact single-head ablation scan on the
bridge and nnsight backends — which resumes each head's pass from the cached residual of its layer
(:meth:`interp.backends.Backend.forward` with ``start_at_layer``) — is timed against the naive loop on the
same backend (one full forward per head) and checked to agree to 1e-4.

    python benchmarks/bench_backends.py            # full: 64 prompts, four analyses, every head
    python benchmarks/bench_backends.py --quick    # 16 prompts, sinks and sparsity, every 4th layer (< 3 min)

The last lines are ``RESULT bridge_vs_hooked_sinks <x> ratio target <= 1.3``,
``RESULT bridge_ablation_scan_speedup <x> ratio target >= 2``, ``RESULT nnsight_vs_bridge_sinks <x> ratio
target <= 1.5`` and ``RESULT nnsight_ablation_scan_speedup <x> ratio target >= 2`` (the nnsight lines when
nnsight is installed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spin-waiting skews 2-thread timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table, result_line  # noqa: E402

import interp  # noqa: E402
from interp.attribution.ablation_scan import ablation_scan, naive_ablation_scan  # noqa: E402
from interp.data import default_prompts  # noqa: E402
from interp.tasks import induction_task  # noqa: E402

MODEL = "gemma-3-270m"
RAW = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}


#: Metrics decided by a ranking whose near-ties float rounding can flip (which keys an eviction policy keeps).
LOOSE_METRICS = {"eviction_error": 5e-2}


def frames_agree(a: pd.DataFrame, b: pd.DataFrame, rtol: float, atol: float) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    loose = a["metric"].astype("string").map(LOOSE_METRICS).astype(float).fillna(rtol).to_numpy()
    for column in a.columns:
        left, right = a[column], b[column]
        if pd.api.types.is_float_dtype(left):
            x, y = left.to_numpy(float), right.to_numpy(float)
            tolerance = loose if column == "value" else rtol
            if not np.all(np.isclose(x, y, rtol=tolerance, atol=atol, equal_nan=True)):
                return False
        elif left.astype("string").fillna("<NA>").tolist() != right.astype("string").fillna("<NA>").tolist():
            return False
    return True


def time_analysis(models: dict, analysis: str, prompts, rounds: int, tolerance: tuple[float, float],
                  raw_bridge=None, **options) -> dict:
    seconds: dict[str, list[float]] = {b: [] for b in models}
    frames = {}
    for lm in models.values():  # warm-up: first-call costs (lazy imports, caches) out of the timing
        interp.run(analysis, lm, prompts, progress=False, **options)
    for _ in range(rounds):
        for backend, lm in models.items():
            started = time.perf_counter()
            frames[backend] = interp.run(analysis, lm, prompts, progress=False, **options).frame
            seconds[backend].append(time.perf_counter() - started)
    median = {b: statistics.median(seconds[b]) for b in models}
    row = {"analysis": analysis, **{f"{b}_s": median[b] for b in models},
           "ratio": median["bridge"] / median["hooked"], "agree": frames_agree(frames["hooked"], frames["bridge"], *tolerance)}
    if "nnsight" in models:  # nnsight runs the raw checkpoint: its reference is the bridge without processing
        reference = interp.run(analysis, raw_bridge, prompts, progress=False, **options).frame
        row["nnsight_ratio"] = median["nnsight"] / median["bridge"]
        row["agree"] = row["agree"] and frames_agree(reference, frames["nnsight"], *tolerance)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 prompts, two analyses, every 4th layer (< 3 min)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from interp.backends import available_backends

    models = {b: interp.load_model(MODEL, backend=b) for b in ("hooked", "bridge", "nnsight") if b in available_backends()}
    raw_bridge = interp.load_model(MODEL, backend="bridge", processing=RAW) if "nnsight" in models else None
    prompts = default_prompts()[: 16 if args.quick else 64]
    rounds = 2 if args.quick else 3

    rows = [time_analysis(models, "attention-sinks", prompts, rounds, (1e-4, 1e-4), raw_bridge)]
    rows.append(time_analysis(models, "attention-sparsity", prompts[:8], rounds, (2e-3, 1e-6), raw_bridge,
                              rank_prompts=4))
    if not args.quick:
        rows.append(time_analysis(models, "svd-channels", None, rounds, (1e-4, 1e-5), raw_bridge))
        rows.append(time_analysis(models, "head-importance", prompts[:8], rounds, (2e-3, 1e-4), raw_bridge))
    print(f"{MODEL}: analyses on {', '.join(models)} ({len(prompts)} prompts, median of {rounds} rounds, "
          f"{torch.get_num_threads()} threads)")
    nn = "nnsight" in models
    print_table([(r["analysis"], f"{r['hooked_s']:.2f}", f"{r['bridge_s']:.2f}",
                  *((f"{r['nnsight_s']:.2f}",) if nn else ()), f"{r['ratio']:.2f}",
                  *((f"{r['nnsight_ratio']:.2f}",) if nn else ()), "yes" if r["agree"] else "NO") for r in rows],
                ("analysis", "hooked s", "bridge s", *(("nnsight s",) if nn else ()), "bridge/hooked",
                 *(("nnsight/bridge",) if nn else ()), "frames agree"))

    bridge = models["bridge"]
    task = induction_task(bridge, n_sequences=4, half_length=12, seed=0)
    # quick: every 4th layer (early and late heads alike); full: every head of the model
    layers = list(range(0, bridge.n_layers, 4)) if args.quick else list(range(bridge.n_layers))
    heads = [(layer, head) for layer in layers for head in range(bridge.n_heads)]
    scans = {}
    runs = [("bridge fast", ablation_scan, bridge), ("bridge naive", naive_ablation_scan, bridge),
            ("hooked fast", ablation_scan, models["hooked"])]
    if nn:
        runs += [("nnsight fast", ablation_scan, models["nnsight"]), ("nnsight naive", naive_ablation_scan, models["nnsight"])]
    for label, fn, lm in runs:
        fn(lm, task, heads=heads[:1])  # warm-up
        started = time.perf_counter()
        scans[label] = (fn(lm, task, heads=heads), time.perf_counter() - started)
    pairs = [("bridge fast", "bridge naive")] + ([("nnsight fast", "nnsight naive")] if nn else [])
    worst = max(float((scans[fast][0].values[m] - scans[naive][0].values[m]).nan_to_num().abs().max())
                for fast, naive in pairs for m in scans[fast][0].values)
    speedup = scans["bridge naive"][1] / scans["bridge fast"][1]
    print(f"\nexact ablation scan, {len(heads)} heads (layers {layers}), induction task 4 x 24 tokens")
    print_table([(label, f"{seconds:.2f}") for label, (_, seconds) in scans.items()], ("scan", "seconds"))
    print(f"fast vs naive scan on the same backend: max |difference| over every metric {worst:.2e} (tolerance 1e-4)")
    ok = all(r["agree"] for r in rows) and worst < 1e-4
    if not ok:
        print("DISAGREEMENT between the backends or the scans: the timings above do not count", file=sys.stderr)
    sinks = rows[0]["ratio"]
    print(result_line("bridge_vs_hooked_sinks", sinks, "ratio", "<=", 1.3))
    print(result_line("bridge_ablation_scan_speedup", speedup, "ratio", ">=", 2))
    if nn:
        print(result_line("nnsight_vs_bridge_sinks", rows[0]["nnsight_ratio"], "ratio", "<=", 1.5))
        print(result_line("nnsight_ablation_scan_speedup", scans["nnsight naive"][1] / scans["nnsight fast"][1],
                          "ratio", ">=", 2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
