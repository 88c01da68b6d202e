"""A chosen steering setting: what to add, where, how strongly, and the scores it was chosen on.

:class:`SteeringChoice` is what :func:`interp.steering.select_steering` returns and what
:func:`interp.steer_language` takes (``choice=``). It is plain data (JSON through :meth:`SteeringChoice.save`
and :meth:`SteeringChoice.load`): the direction itself is rebuilt from the SAE or the matched sentences when
it is used, and the SAE's digest is checked then, so a choice made for another model or another SAE is
refused with one line instead of silently steering with the wrong feature.

Examples:
    >>> from interp.steering import SteeringChoice
    >>> choice = SteeringChoice(method="mean-diff", model="tiny-gpt2", backend="hooked", target="fr", layer=1,
    ...                         strength=0.5, residual_norm=8.0)
    >>> choice.describe()
    'mean-diff at layer 1, strength 0.5 × residual norm (add, all positions) → fr'
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "fr.json")
    >>> SteeringChoice.load(choice.save(path)) == choice
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from interp.errors import InterpUserError, OptionError

#: Direction kinds: one SAE feature, several same-language SAE features, the dense mean difference, and the
#: mean difference reconstructed through the SAE's language features.
METHODS = ("sae", "sae-features", "sae-mean-diff", "mean-diff")
#: Edit modes (``add``: x ← x + s·r̄·û; ``clamp``: set the projection on the direction).
MODES = ("add", "clamp")
#: Edited positions (``all`` prompt and new positions; ``new``: the last prompt position and new ones).
POSITIONS = ("all", "new")
#: Version of the selection protocol (part of the cache key of choices made by :func:`select_steering`).
CHOICE_FORMAT = 2

Method = Literal["sae", "sae-features", "sae-mean-diff", "mean-diff"]


class SteeringChoiceError(InterpUserError):
    """A steering choice file is missing, malformed, or made for another model or SAE."""


@dataclass(frozen=True)
class SteeringChoice:
    """One steering setting, chosen by its effect.

    The edit at ``blocks.{layer}.hook_resid_post`` is ``x ← x + strength · r̄ · û`` (``add``), where ``û`` is
    the unit direction and ``r̄`` the mean residual norm at that layer over ordinary text (non-BOS tokens),
    so strengths compare across features, layers and methods; ``clamp`` sets the component along ``û``
    (for one SAE feature: the feature's activation, through the SAE encoder) to ``strength · r̄``.

    Attributes:
        method: ``sae`` (one feature), ``sae-features`` (the normalised sum of several same-language
            features' unit decoder rows), ``sae-mean-diff`` (the target-minus-English mean residual encoded by
            the SAE, kept on the language's features and decoded), or ``mean-diff`` (the dense difference of
            mean residuals).
        model, backend: the model name and backend it was chosen on.
        target: the target language (ISO 639-1).
        layer: the block whose ``hook_resid_post`` is edited.
        strength: edit size as a fraction of ``residual_norm``.
        mode, positions: see :data:`MODES`, :data:`POSITIONS`.
        features: the SAE features of the direction (empty for ``mean-diff``).
        sae_path, sae_hook, sae_digest: the SAE's folder, hook and sha256 of its weights (empty for
            ``mean-diff``); checked when the choice is used.
        residual_norm: ``r̄`` at ``layer``, measured when the choice was made.
        rule: which rule picked the direction, in words.
        scores: what it was chosen on (output and input scores of the features; success, coherent success
            and fidelity on the selection prompts; prompts used).
        seconds: time per selection stage.
        provenance: suite version, seed, date.
    """

    method: Method
    model: str
    backend: str
    target: str
    layer: int
    strength: float
    mode: str = "add"
    positions: str = "all"
    features: tuple[int, ...] = ()
    sae_path: str = ""
    sae_hook: str = ""
    sae_digest: str = ""
    residual_norm: float = float("nan")
    rule: str = ""
    scores: dict[str, Any] = field(default_factory=dict, compare=False)
    seconds: dict[str, float] = field(default_factory=dict, compare=False)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OptionError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.mode not in MODES:
            raise OptionError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.positions not in POSITIONS:
            raise OptionError(f"positions must be one of {', '.join(POSITIONS)}; got {self.positions!r}")
        if not math.isfinite(self.strength):
            raise OptionError(f"strength must be a finite number; got {self.strength}")
        if self.method != "mean-diff" and not self.features:
            raise OptionError(f"method {self.method!r} needs at least one SAE feature")
        if self.method == "sae" and len(self.features) != 1:
            raise OptionError(f"method 'sae' steers with exactly one feature; got {len(self.features)}")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))

    @property
    def uses_sae(self) -> bool:
        return self.method != "mean-diff"

    def describe(self) -> str:
        """One line: what is added, where, how strongly."""
        what = {"sae": "SAE feature", "sae-features": "SAE features", "sae-mean-diff": "SAE-reconstructed mean-diff",
                "mean-diff": "mean-diff"}[self.method]
        feats = (" " + "+".join(str(f) for f in self.features)) if self.method in ("sae", "sae-features") else ""
        return (f"{what}{feats} at layer {self.layer}, strength {self.strength:g} × residual norm "
                f"({self.mode}, {self.positions} positions) → {self.target}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        out["format"] = CHOICE_FORMAT
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the steering choice") -> SteeringChoice:
        """Rebuild a choice from :meth:`to_dict`'s output; a bad field is a :class:`SteeringChoiceError`."""
        if not isinstance(data, dict):
            raise SteeringChoiceError(f"{source} is not a JSON object with the fields of a SteeringChoice")
        names = {f.name for f in fields(cls)}
        required = {"method", "model", "backend", "target", "layer", "strength"}
        missing = sorted(required - set(data))
        if missing:
            raise SteeringChoiceError(f"{source} lacks the field(s) {', '.join(missing)}: it is not a saved "
                                      "SteeringChoice")
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            kwargs["layer"] = int(kwargs["layer"])
            kwargs["strength"] = float(kwargs["strength"])
            kwargs["features"] = tuple(int(f) for f in kwargs.get("features", ()))
            if "residual_norm" in kwargs:
                kwargs["residual_norm"] = float(kwargs["residual_norm"])
            return cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise SteeringChoiceError(f"{source} has a bad field: {error}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the choice as JSON (through a temporary file and a rename; parent folders are created)."""
        from interp.results import atomic_write

        return atomic_write(path, json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringChoice:
        """Read a choice written by :meth:`save`. A missing or malformed file is a :class:`SteeringChoiceError`."""
        target = Path(path)
        if not target.is_file():
            raise SteeringChoiceError(f"no steering choice file at {target}: give the path that "
                                      "SteeringChoice.save wrote")
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else type(error).__name__
            raise SteeringChoiceError(f"{target} is not a readable steering choice ({reason}): "
                                      "expected the JSON that SteeringChoice.save writes") from None
        return cls.from_dict(data, source=str(target))

    def check_model(self, model: str, backend: str | None = None) -> None:
        """Refuse to steer another model with this choice (the backend may differ: same weights)."""
        if model != self.model:
            raise SteeringChoiceError(f"this steering choice was made for model {self.model!r}, not {model!r}: "
                                      f"select one for {model!r} (interp.steering.select_steering)")
        del backend  # both backends run the same weights; the residual norm is re-measured if it differs


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)
