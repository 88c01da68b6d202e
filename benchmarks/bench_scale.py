"""Benchmark: the suite beyond the bundled models — Llama-shaped models of about 1B and 7B parameters.

Nothing is downloaded: the models have the shapes of public checkpoints (TinyLlama-1.1B: d_model 2048,
22 layers, 32 query heads sharing 4 key/value heads, vocabulary 32000; Llama-2-7B: d_model 4096, 32
layers, 32 heads, vocabulary 32000) and random weights, which cost the same time and memory as trained
ones. For each backend, in a fresh process (so peak memory is that run's alone), it measures:

* the ``attention-sinks`` probe pass (one streaming pass with hooks on every layer's pattern and residual),
* the exact ablation scan over one layer's heads (all heads of the middle layer, resumed from its cached
  residual) on an induction task, checked against the naive loop on two heads,
* steered greedy generation (a direction added to the middle layer's residual, KV-cached),

with wall time and peak resident memory (VmHWM). The 7B shape in float32 (about 27 GB, more than this
machine's memory) runs through accelerate's ``device_map`` with a CPU budget and disk offload on the
bridge backend: its checkpoint is written once to the cache directory, shard by shard, and read back
layer by layer as the passes run.

    python benchmarks/bench_scale.py --quick    # the 1B shape on every backend (CPU, < 3 min)
    python benchmarks/bench_scale.py            # and the 7B shape with disk offload (CPU: slow, ~30+ min)
    python benchmarks/bench_scale.py --only-7b --sinks-only   # the 7B offloaded load and sinks pass alone
    python benchmarks/bench_scale.py --device cuda   # on a GPU: both shapes in memory on both backends

The table gives the times; the last lines are ``RESULT scale_<shape>_<backend>_scan_vs_naive <x> abs target
<= 0.0001`` (the exact scan agrees with the naive loop) and ``RESULT scale_<shape>_<backend>_peak_memory <x> GiB
target <= 24`` (it fits this machine's memory — for the 7B shape only through offloading).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table, result_line  # noqa: E402

SHAPES = {
    # TinyLlama-1.1B's shape
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
    # Llama-2-7B's shape
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
}
PROMPTS = ["The history of the city begins with a small settlement on the river, where traders met.",
           "In the morning the market fills with farmers who bring vegetables, bread and cheese to sell."]

WORKER = r'''
import json, os, sys, time, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
import interp
from interp.attribution.ablation_scan import ablation_scan, naive_ablation_scan
from interp.generation import generate
from interp.tasks import induction_task

def peak_gib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM")) / 2**20

out = {}
started = time.perf_counter()
if cfg["folder"]:
    lm = interp.load_model(cfg["folder"], backend=cfg["backend"], dtype=cfg["dtype"], device=cfg["device"],
                           **cfg["placement"])
else:
    import transformers
    from interp.models import from_hf
    from interp.models.tiny import byte_tokenizer
    config = transformers.LlamaConfig(**cfg["shape"], attn_implementation="eager", tie_word_embeddings=False,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(config)
    hf = hf.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    hf.eval()
    lm = from_hf(hf, byte_tokenizer(), name=f"llama-{cfg['label']}-random", backend=cfg["backend"],
                 dtype=cfg["dtype"], device=cfg["device"])
    del hf
out["load_s"] = time.perf_counter() - started
out["after_load_gib"] = peak_gib()
out["placement"] = sorted(set(lm.info.placement.values()))

started = time.perf_counter()
interp.run("attention-sinks", lm, cfg["prompts"], progress=False, max_tokens=cfg["tokens"])
out["sinks_s"] = time.perf_counter() - started
out["load_sinks_peak_gib"] = peak_gib()  # the whole process: interpreter, libraries, weights, the pass
out["weights_gib"] = lm.info.n_params * torch.finfo(lm.dtype).bits / 8 / 2**30
if cfg.get("sinks_only"):
    out["scan_s"] = out["generate_s"] = out["tokens_per_s"] = float("nan")
    out["peak_gib"] = peak_gib()
    print("RESULT-JSON " + json.dumps(out))
    raise SystemExit(0)

layer = lm.n_layers // 2
task = induction_task(lm, n_sequences=2, half_length=cfg["half"], seed=0)
heads = [(layer, h) for h in range(lm.n_heads)]
started = time.perf_counter()
scan = ablation_scan(lm, task, heads=heads, metrics=("loss", "logit_diff"))
out["scan_s"] = time.perf_counter() - started
if cfg["check"]:
    naive = naive_ablation_scan(lm, task, heads=heads[:2], metrics=("loss", "logit_diff"))
    out["scan_vs_naive"] = max(float((scan.values[m][layer, :2] - naive.values[m][layer, :2]).abs().max())
                               for m in ("loss", "logit_diff"))

torch.manual_seed(0)
direction = torch.randn(lm.d_model) * 0.5
steer = [(f"blocks.{layer}.hook_resid_post", lambda x, hook: x + direction.to(x))]
started = time.perf_counter()
gen = generate(lm, cfg["prompts"], max_new_tokens=cfg["new_tokens"], fwd_hooks=steer)
out["generate_s"] = time.perf_counter() - started
out["tokens_per_s"] = gen.tokens_per_second
out["peak_gib"] = peak_gib()
print("RESULT-JSON " + json.dumps(out))
'''


def write_random_checkpoint(folder: Path, shape: dict, shard_bytes: int = 2 * 2**30) -> None:
    """A Hugging Face Llama checkpoint with random float32 weights, written shard by shard (never whole in memory)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    from interp.models.tiny import byte_tokenizer

    if (folder / "model.safetensors.index.json").is_file():
        return
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = transformers.LlamaConfig(**shape, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
                                      pad_token_id=2)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        skeleton = transformers.LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    size, index, weight_map = 0, 0, {}

    def flush() -> None:
        nonlocal shard, size, index
        if shard:
            name = f"model-{index:05d}.safetensors"
            save_file(shard, str(tmp / name), metadata={"format": "pt"})
            weight_map.update({key: name for key in shard})
            shard, size, index = {}, 0, index + 1

    for name, parameter in skeleton.named_parameters():
        if name.endswith("norm.weight"):
            tensor = torch.ones(parameter.shape)
        else:
            tensor = torch.empty(parameter.shape).normal_(0.0, 0.02, generator=generator)
        shard[name] = tensor
        size += tensor.numel() * 4
        if size >= shard_bytes:
            flush()
    flush()
    total = sum(p.numel() * 4 for p in skeleton.parameters())
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    config.save_pretrained(str(tmp))
    byte_tokenizer().save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def run_worker(cfg: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT-JSON ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker failed ({cfg['label']}, {cfg['backend']}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT-JSON "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 1B shape only (CPU, under 3 minutes)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-memory", default="8GiB", help="CPU budget of the 7B offloaded run (default 8GiB)")
    parser.add_argument("--keep", action="store_true", help="keep the 7B random checkpoint (27 GB) in the cache")
    parser.add_argument("--backend", choices=["hooked", "bridge", "nnsight"], action="append",
                        help="only this backend for the 1B shape (repeatable; default every installed one)")
    parser.add_argument("--only-7b", action="store_true", help="skip the 1B shape")
    parser.add_argument("--sinks-only", action="store_true",
                        help="the 7B offloaded run loads and runs the sinks pass only (no scan, no generation)")
    args = parser.parse_args()
    from interp.backends import available_backends
    from interp.cache import cache_dir

    rows, results = [], []
    common = dict(threads=args.threads, device=args.device, prompts=PROMPTS, folder=None, placement={})
    plan = [("1b", backend, dict(common, shape=SHAPES["1b"], dtype="float32", tokens=64, half=12, new_tokens=8,
                                 check=True))
            for backend in (args.backend or available_backends()) if not args.only_7b]
    if not args.quick:
        if args.device == "cuda":  # in GPU memory, both backends
            plan += [("7b", backend, dict(common, shape=SHAPES["7b"], dtype="bfloat16", tokens=64, half=12,
                                          new_tokens=8, check=True)) for backend in available_backends()]
        else:  # larger than this machine's memory: accelerate's device map, CPU budget + disk offload
            folder = cache_dir() / "bench-scale" / "llama-7b-random"
            started = time.perf_counter()
            write_random_checkpoint(folder, SHAPES["7b"])
            print(f"7B random checkpoint at {folder} ({time.perf_counter() - started:.0f} s to write)", flush=True)
            placement = {"max_memory": {"cpu": args.max_memory}, "offload_folder": str(folder.parent / "offload")}
            plan.append(("7b", "bridge", dict(common, folder=str(folder), placement=placement, dtype="float32",
                                              tokens=24, half=6, new_tokens=2, check=False, sinks_only=args.sinks_only)))
    for label, backend, cfg in plan:
        cfg = dict(cfg, label=label, backend=backend)
        print(f"running {label} on {backend} ...", flush=True)
        out = run_worker(cfg)
        results.append((label, backend, out))
        rows.append((label, backend, ",".join(out["placement"]) or args.device, f"{out['load_s']:.1f}",
                     f"{out['sinks_s']:.1f}", f"{out['scan_s']:.1f}", f"{out['tokens_per_s']:.2f}",
                     f"{out['load_sinks_peak_gib']:.2f}", f"{out['load_sinks_peak_gib'] / out['weights_gib']:.2f}",
                     f"{out['peak_gib']:.1f}", f"{out.get('scan_vs_naive', float('nan')):.1e}"))
    print(f"\nLlama shapes with random weights, {args.device}, {args.threads} threads")
    print_table(rows, ("shape", "backend", "placement", "load s", "sinks s", "layer scan s", "gen tok/s",
                       "load+sinks peak GiB", "÷ weights", "peak GiB", "scan vs naive"))
    if not args.quick and args.device == "cpu" and not args.keep:
        shutil.rmtree(cache_dir() / "bench-scale", ignore_errors=True)
    for label, backend, out in results:
        if "scan_vs_naive" in out:
            print(result_line(f"scale_{label}_{backend}_scan_vs_naive", out["scan_vs_naive"], "abs", "<=", 1e-4))
        print(result_line(f"scale_{label}_{backend}_peak_memory", out["peak_gib"], "GiB", "<=", 24))
        if label == "7b":
            print(result_line(f"scale_7b_{backend}_sinks_seconds", out["sinks_s"], "s", "<=", 3600))
    for label, backend, out in results:
        if label == "1b" and backend != "hooked":  # HookedTransformer keeps its own copy: reported in the table
            print(result_line(f"load_peak_over_weights_{backend}", out["load_sinks_peak_gib"] / out["weights_gib"],
                              "ratio", "<=", 1.5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
