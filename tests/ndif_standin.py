"""The client half of the stand-in NDIF server (``tests/ndif_server.py``): a subclass of nnsight's
``RemoteBackend`` that replaces only its network calls (the ``/subscribe`` websocket and the HTTP POST) with
a pipe to a server process. Serializing the request, reading the response, raising on an error status and
loading the result are nnsight's own code.
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from nnsight.intervention.backends.remote import RemoteBackend

_SERVERS: dict[str, subprocess.Popen[bytes]] = {}
_SERVER = Path(__file__).with_name("ndif_server.py")


def _server(folder: str) -> subprocess.Popen[bytes]:
    process = _SERVERS.get(folder)
    if process is None or process.poll() is not None:
        env = {**os.environ, "PYTHONPATH": ""}
        process = subprocess.Popen([sys.executable, str(_SERVER), folder], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env, cwd="/")
        assert process.stdout is not None
        if _read(process.stdout) != b"ready":
            raise RuntimeError(f"the stand-in NDIF server for {folder} did not start")
        _SERVERS[folder] = process
    return process


def _read(stream: Any) -> bytes:
    head = stream.read(8)
    if len(head) < 8:
        raise RuntimeError("the stand-in NDIF server closed the pipe")
    (size,) = struct.unpack("<Q", head)
    return stream.read(size)


def _write(stream: Any, data: bytes) -> None:
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


@atexit.register
def _stop_servers() -> None:
    for process in _SERVERS.values():
        if process.poll() is None:
            process.terminate()


def stand_in(folder: str | Path) -> type[RemoteBackend]:
    """An nnsight ``RemoteBackend`` class whose requests go to a stand-in server serving ``folder``."""

    class StandInBackend(RemoteBackend):
        def request(self, request: Any, tracer: Any) -> Any:
            blob = self._serialize(tracer)  # nnsight's own serialization, as it would be POSTed
            process = _server(str(folder))
            assert process.stdin is not None and process.stdout is not None
            _write(process.stdin, blob)
            _write(process.stdin, json.dumps({"compress": self.compress, "env": request.env or {},
                                              "model_key": request.model_key}).encode())
            return self.handle(self.parse(_read(process.stdout)))

    return StandInBackend
