"""interp: what do the attention heads of a language model do?

Hook-based probes over TransformerLens models, attribution modules that return tidy pandas frames and
plotly figures, and self-contained HTML reports.

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-gpt2")
    >>> result = interp.run("attention-sinks", lm, prompts=["The cat sat on the mat."], progress=False)
    >>> sorted(result.frame.columns)[:3]
    ['dim', 'flagged', 'head']
"""

from __future__ import annotations

import os

# transformers/TransformerLens print advisory warnings on import that say nothing about the results.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from interp.api import atlas, explain, run  # noqa: E402
from interp.backends.ndif import Remote  # noqa: E402
from interp.errors import InterpUserError  # noqa: E402
from interp.models import LoadedModel, load_model  # noqa: E402
from interp.registry import analysis_names  # noqa: E402
from interp.results import Result  # noqa: E402
from interp.steering import SteeringChoice, steer_language  # noqa: E402
from interp.viewer import show_attention  # noqa: E402

__version__ = "0.1.0"

__all__ = ["InterpUserError", "LoadedModel", "Remote", "Result", "analysis_names", "atlas", "explain", "load_model", "run",
           "show_attention", "steer_language", "SteeringChoice", "__version__"]
