"""A stand-in for an NDIF model server, for testing remote execution without a network.

Run as ``python tests/ndif_server.py FOLDER`` (a Hugging Face checkpoint with its tokenizer). It loads the
model with nnsight as an NDIF deployment does, then answers requests on stdin/stdout: each request is an
8-byte length and the bytes nnsight's ``RemoteBackend`` would POST (``RequestModel.serialize``'s payload,
compressed as the client's configuration says), each answer an 8-byte length and the pickled
``ResponseModel`` the server's websocket would deliver.

``interp`` (and this repository's other packages) cannot be imported here: the import system refuses them
before anything else runs, and the repository is taken off ``sys.path``. So a request can only run if
nnsight shipped everything it needs by value, as on a real server. This file imports nothing of ``interp``.
"""

from __future__ import annotations

import gc
import io
import struct
import sys
import traceback
from pathlib import Path

_BLOCKED = ("interp", "analyses", "tests", "benchmarks")


class _Refuse:
    """A meta-path finder that refuses this repository's packages."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the stand-in NDIF server has no interp)")


def _isolate() -> None:
    repo = str(Path(__file__).resolve().parents[1])
    sys.meta_path.insert(0, _Refuse())
    sys.path[:] = [p for p in sys.path if p not in ("", ".", repo)]
    for name in list(sys.modules):
        if name.split(".")[0] in _BLOCKED:
            del sys.modules[name]
    try:
        import interp  # noqa: F401
    except ModuleNotFoundError:
        return
    raise SystemExit("the stand-in server could import interp")


def _read(stream: io.BufferedReader) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return stream.read(size)


def _write(stream: io.BufferedWriter, data: bytes) -> None:
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def main(folder: str) -> None:
    _isolate()
    import json

    import torch
    from nnsight import LanguageModel
    from nnsight.schema.request import RequestModel
    from nnsight.schema.response import ResponseModel, Status
    from nnsight.tracing.tracer import _saves, dec, inc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    model = LanguageModel(hf, tokenizer=AutoTokenizer.from_pretrained(folder))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the request prints must not corrupt the channel
    _write(stdout, b"ready")
    while (message := _read(stdin)) is not None:
        meta = json.loads(_read(stdin) or b"{}")
        try:
            model._remoteable_set_env(meta.get("env") or {})
            tracer = RequestModel.deserialize(message, model._remoteable_persistent_objects(),
                                              compress=bool(meta.get("compress")))
            inc()
            try:
                tracer.execute(tracer.info.code)
                saved = {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in _saves()}
            finally:
                dec()
            buffer = io.BytesIO()
            torch.save(saved, buffer)
            data = buffer.getvalue()
            if meta.get("compress"):
                import zstandard

                data = zstandard.ZstdCompressor(level=6).compress(data)
            response = ResponseModel(id="stand-in", status=Status.COMPLETED, data=data)
        except Exception as error:  # noqa: BLE001 - reported to the client as the server would
            traceback.print_exc(file=sys.stderr)
            response = ResponseModel(id="stand-in", status=Status.ERROR, description=f"{type(error).__name__}: {error}")
        _write(stdout, response.pickle())
        tracer = saved = response = None  # a request's frame holds its tensors (and their graph) in reference
        gc.collect()  # cycles, which the allocation-count collector would free only much later


if __name__ == "__main__":
    main(sys.argv[1])
