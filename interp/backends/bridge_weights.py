"""TransformerLens's weight processing (``fold_ln`` …) for a ``TransformerBridge``, one block at a time.

``TransformerBridge.process_weights`` hands the whole state dict to ``ProcessWeights.process_weights``, whose
steps each deep-copy the dict they are given: while the model's own weights are alive, that is two more
copies of the model at the peak (3.0× the weights with temporaries, measured at the 1B shape). The steps
themselves are per block — folding a block's norms into its own projections, centring its writing weights,
folding its value bias — plus a last step on the embedding, the final norm and the unembedding. So the same
function is run here on one block's slice of the state dict at a time (renamed to block 0, with a
configuration of one block), and once on the non-block weights (a configuration of no blocks); each result
is installed by TransformerLens's own ``distribute_weights_to_components`` before the next slice is copied.
The extra memory at the peak is a few blocks' weights, and every arithmetic step is TransformerLens's, in
its order, on the same tensors: ``tests/unit/test_backends.py`` checks the processed weights equal
``TransformerBridge.process_weights``'s bit for bit.

Adapters that rewrite the whole state dict before processing (``preprocess_weights``), mixture-of-experts
blocks and the experimental ``refactor_factored_attn_matrices`` take TransformerLens's own path.
"""

from __future__ import annotations

import copy
import logging
import re
import sys
from typing import Any

import torch

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")


def process_weights_by_block(bridge: Any, *, verbose: bool = False, fold_ln: bool = True,
                             center_writing_weights: bool = True, center_unembed: bool = True,
                             fold_value_biases: bool = True, refactor_factored_attn_matrices: bool = False) -> None:
    """Process ``bridge``'s weights as ``TransformerBridge.process_weights`` does, one block at a time.

    Installed by the bridge backend in place of the Bridge's method for one ``enable_compatibility_mode``
    call; the arguments are the Bridge's.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-llama", backend="bridge")  # processed block by block
        >>> lm.info.processing["fold_ln"]
        True
    """
    from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
    from transformer_lens.weight_processing import ProcessWeights

    adapter = bridge.adapter
    cfg = bridge.cfg
    flags = {"fold_ln": fold_ln, "center_writing_weights": center_writing_weights, "center_unembed": center_unembed,
             "fold_value_biases": fold_value_biases, "refactor_factored_attn_matrices": refactor_factored_attn_matrices}
    custom_preprocess = adapter is not None and \
        getattr(type(adapter), "preprocess_weights", None) is not ArchitectureAdapter.preprocess_weights
    experts = getattr(cfg, "num_experts", None)
    if custom_preprocess or experts or refactor_factored_attn_matrices or bridge._weights_processed:
        type(bridge).process_weights(bridge, verbose=verbose, **flags)  # TransformerLens's whole-dict path
        return
    # the helpers the Bridge's own method uses, from the module that defines it (transformer-lens 3.9 and 4)
    bridge_module = sys.modules[type(bridge).process_weights.__module__]
    for name, param in bridge.original_model.named_parameters():  # the Bridge's own guard, same message
        bridge_module.require_readable_weight(
            param, operation=f"process weights ({name})", owner=bridge.original_model,
            remedy="Load the model dequantized, or use the bridge without weight processing "
                   "(enable_compatibility_mode(no_processing=True)).")
    bridge._weights_processed = True
    if center_unembed and bridge_module.softcap_enabled(getattr(cfg, "output_logits_soft_cap", None)):
        logging.warning("center_unembed=True is incompatible with logit softcapping (output_logits_soft_cap=%.1f). "
                        "Disabling center_unembed.", cfg.output_logits_soft_cap)
        center_unembed = flags["center_unembed"] = False
    if adapter is not None:
        adapter._fold_ln_requested = fold_ln

    state = bridge.state_dict()  # references to the live tensors, not copies
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), {})[match.group(2)] = value
        else:
            rest[key] = value
    del state
    if "embed.weight" in rest and "unembed.weight" in rest and \
            rest["embed.weight"].data_ptr() == rest["unembed.weight"].data_ptr():
        rest["unembed.weight"] = rest["unembed.weight"].clone()  # untie, as the Bridge does

    one_block, no_block = copy.copy(cfg), copy.copy(cfg)
    one_block.n_layers, no_block.n_layers = 1, 0
    # Centring the writing weights of a block also centres the embedding, and fails without one: a
    # one-row stand-in takes its place in each block's slice and is thrown away (the real embedding is
    # processed once, with the final norm and the unembedding, in the last step).
    stand_ins = {key: value[:1] for key, value in rest.items() if key.split(".")[0] in ("embed", "pos_embed")}
    for index in sorted(blocks):
        chunk = {f"blocks.0.{name}": tensor for name, tensor in blocks.pop(index).items()}
        chunk.update({key: value.clone() for key, value in stand_ins.items()})
        processed = ProcessWeights.process_weights(chunk, one_block, adapter=adapter,
                                                   **{**flags, "center_unembed": False})
        del chunk
        own = {f"blocks.{index}.{key.removeprefix('blocks.0.')}": value
               for key, value in _tl_keys(bridge, processed).items() if key.startswith("blocks.0.")}
        del processed
        ProcessWeights.distribute_weights_to_components(state_dict=own, component_mapping=bridge.real_components)
        del own
    if getattr(cfg, "normalization_type", "LN") not in ("LN", "LNPre"):
        # Only centring the writing weights reads the embedding, and TransformerLens centres only LayerNorm
        # models: left out, it is not copied twice more (on small models it is most of the weights).
        rest = {key: value for key, value in rest.items() if key.split(".")[0] not in ("embed", "pos_embed")}
    processed = _tl_keys(bridge, ProcessWeights.process_weights(rest, no_block, adapter=adapter, **flags))
    del rest
    ProcessWeights.distribute_weights_to_components(state_dict=processed, component_mapping=bridge.real_components)
    del processed
    if adapter is not None:
        adapter.postprocess_weights(bridge)


def _tl_keys(bridge: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face prefixes renamed to the Bridge's TransformerLens names, as the Bridge does before it
    distributes processed weights."""
    prefixes = {remote: name for name, (remote, _) in bridge.real_components.items() if remote and remote != name}
    renamed = {}
    for key, value in state.items():
        for remote, name in prefixes.items():
            if key.startswith(remote + "."):
                key = f"{name}.{key[len(remote) + 1:]}"
                break
        renamed[key] = value
    return renamed
