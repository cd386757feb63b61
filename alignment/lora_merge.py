"""LoRA adapters merged into their layers from tensors, not from a live module.

PEFT's `merge_and_unload` merges inside the model, which needs every weight whole in its
module; under DeepSpeed ZeRO-3 a module holds only its shard. Exporting a sharded LoRA
run (`final/`) and streaming its weights into the vLLM engine both work from gathered
tensors instead: this function turns (a part of) a PEFT model's state dict into the plain
model's.
"""

from __future__ import annotations

import math

import torch


def merged_lora_state(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A PEFT LoRA model's gathered state dict (`full_state_dict`) as the plain model's,
    each adapter merged into its layer: W' = W + s·B·A with s = alpha/r (alpha/sqrt(r)
    under rsLoRA; Hu et al. 2021, eq. 3). PEFT's own `merge_and_unload` needs the weights
    whole in the module, which they are not under ZeRO-3; this works from the gathered
    tensors. `modules_to_save` copies (a classifier's head) replace their originals."""
    if config.use_dora or config.rank_pattern or config.alpha_pattern:
        raise ValueError("merging DoRA or per-module ranks from a gathered state is not "
                         "supported: the adapter is saved in final/adapter")
    scale = config.lora_alpha / (math.sqrt(config.r) if config.use_rslora else config.r)
    plain = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    out = {}
    for name, tensor in plain.items():
        if ".lora_" in name or ".original_module." in name:
            continue
        if ".base_layer." in name:
            layer, kind = name.split(".base_layer.")
            if kind == "weight":
                a, b = (plain[f"{layer}.lora_{x}.default.weight"] for x in "AB")
                delta = (b.float() @ a.float()) * scale
                tensor = tensor.float() + (delta.T if config.fan_in_fan_out else delta)
            name = f"{layer}.{kind}"
        out[name.replace(".modules_to_save.default.", ".")] = tensor
    return out
