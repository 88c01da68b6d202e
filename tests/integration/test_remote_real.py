"""Remote execution on smollm2-135m without a network: each analysis that can run remotely, sent through
nnsight's own request path to the stand-in NDIF server (``tests/ndif_server.py``, a separate process in which
``interp`` cannot be imported, serving the bundled checkpoint), gives the local nnsight backend's frame.

The local frames are the ones ``test_nnsight_real.py`` computes with the same options (memoised), so only the
remote runs are extra. The same code runs on the same weights on both sides, so the frames are equal exactly.
The other four analyses a remote model runs (svd-channels, sink-streaming, head-atlas, safety-heads: generation
and resumed passes, which the unit tests cover on tiny checkpoints) are compared the same way by
``benchmarks/bench_remote.py``, outside ``make test`` (safety-heads alone takes two minutes remotely).
Skipped where nnsight is not installed.
"""

from __future__ import annotations

import pytest

import interp
from interp.data import default_prompts

from .test_backends_real import run_frame

pytestmark = pytest.mark.integration
pytest.importorskip("nnsight")


@pytest.fixture(scope="module")
def smollm2_remote(smollm2):
    import nnsight.modeling.huggingface as nnsight_hf

    from interp.models.gguf import smollm2_folder
    from tests.ndif_standin import stand_in

    connection = interp.Remote(transport=stand_in(smollm2_folder()))
    remote = interp.load_model("smollm2-135m", backend="nnsight", remote=connection, reuse=False)
    assert connection.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the server's name: the hub id
    nnsight_hf._ID_CACHE[connection.model_id] = connection.model_id  # the hub is not asked (offline)
    return {"local": interp.load_model("smollm2-135m", backend="nnsight"), "remote": remote}


CASES = [
    ("attention-sinks", default_prompts()[:8], {}),
    ("attention-sparsity", default_prompts()[:6], dict(max_tokens=96, window=16, rank_prompts=2, min_keys=8, k=16)),
]


@pytest.mark.parametrize("analysis, prompts, options", CASES, ids=[case[0] for case in CASES])
def test_remote_frames_equal_the_local_nnsight_frames(smollm2_remote, analysis, prompts, options) -> None:
    local = run_frame(smollm2_remote["local"], analysis, prompts, **options)
    result = interp.run(analysis, smollm2_remote["remote"], prompts, progress=False, **options)
    assert result.frame.equals(local)
    travelled = result.metadata["remote"]
    assert travelled["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and travelled["requests"] >= 1
