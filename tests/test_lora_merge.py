"""`merged_lora_state` (LoRA merged from gathered tensors, as under ZeRO-3) gives what
PEFT's own in-module `merge_and_unload` gives."""

from __future__ import annotations

import pytest
import torch

from alignment.lora_merge import merged_lora_state


def _trained(model):
    """Non-zero adapters (PEFT starts B at zero: a merge would then prove nothing)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("rslora", [False, True])
def test_merge_from_state_equals_peft_merge(tiny_model_dir, rslora):
    from peft import LoraConfig, get_peft_model

    from alignment.models import load_causal_lm

    model = _trained(get_peft_model(load_causal_lm(tiny_model_dir, torch.float32), LoraConfig(
        r=4, lora_alpha=8, use_rslora=rslora, target_modules=["q_proj", "v_proj", "down_proj"],
        task_type="CAUSAL_LM")))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_lora_state(state, model.peft_config["default"])
    reference = model.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           state["base_model.model.model.layers.0.self_attn.q_proj.base_layer"
                                 ".weight"])


def test_a_classifier_head_saved_whole_replaces_the_original(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    critic = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    critic = _trained(get_peft_model(critic, LoraConfig(r=2, lora_alpha=4, task_type="SEQ_CLS",
                                                        target_modules=["q_proj"])))
    merged = merged_lora_state(dict(critic.state_dict()), critic.peft_config["default"])
    reference = critic.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6)
