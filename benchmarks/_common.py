"""Helpers shared by the benchmarks: timing, peak memory in a fresh process, RESULT lines."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls (after the first result is kept)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM).

    Not ``getrusage().ru_maxrss``: Linux keeps that across ``execve``, so a spawned child would report
    its parent's peak at the time of the fork.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: best effort


def _child(target: Callable[..., Any], args: tuple, queue: Any) -> None:
    before = _peak_rss_bytes()
    target(*args)
    queue.put((before, _peak_rss_bytes()))


def peak_rss_in_fresh_process(target: Callable[..., Any], *args: Any) -> tuple[int, int]:
    """Run ``target(*args)`` in a fresh (spawned) process; return (peak RSS before, peak RSS after) in bytes."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def result_line(name: str, value: float, unit: str, op: str, target: float) -> str:
    return f"RESULT {name} {value:.3f} {unit} target {op} {target:g}"


def print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def add_backend_argument(parser: Any) -> None:
    """``--backend hooked|bridge`` (default: the suite's default), for benchmarks that load models by name."""
    parser.add_argument("--backend", choices=["hooked", "bridge"], default=None,
                        help="model backend (default: the suite's default, see interp.backends)")


def use_backend(args: Any) -> str:
    """Make every ``interp.load_model`` of this process (and the processes it spawns) use ``args.backend``."""
    if getattr(args, "backend", None):
        os.environ["INTERP_BACKEND"] = args.backend
    from interp.backends import default_backend

    chosen = os.environ.get("INTERP_BACKEND") or default_backend()
    print(f"backend: {chosen}", flush=True)
    return chosen
