"""Any causal LM: tiny random models of the families users train (Llama 3, Qwen2, Qwen3,
Gemma 2, Gemma 3, Mistral, Phi-3, and a base model without a chat template), each with its
own chat template, special tokens and EOS rules, through DPO, GRPO, PPO and the reward model.

The models are built here from configs (hidden 32, 2 layers) around the bundled SmolLM2
tokenizer, to which each family's special tokens are added; the templates are written for
these tests in the shape of each family's published one (roles, turn markers, BOS, what ends
a turn), including the parts that trip trainers up:

  llama    no pad token; tokenizer EOS <|end_of_text|> but turns end with <|eot_id|>, which
           only generation_config.json lists (as Llama-3-Instruct shipped)
  qwen2    no BOS; a default system message; generation config lists two EOS
  qwen3    an empty <think></think> block opens the last assistant turn
  gemma2   the template refuses a system message; assistant is 'model'; turns end with
           <end_of_turn>, tokenizer EOS is <eos>
  gemma3   text-only Gemma3ForCausalLM; the template folds a system message into the
           first user turn
  mistral  [INST] ... [/INST], no generation prompt, no pad token, no system role
  phi3     <|user|> ... <|end|>, then EOS after the last turn; three EOS ids in generation
  base     no chat template at all (plain prompt format), no pad token
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

LLAMA3 = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
          "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
          "{% endif %}")
QWEN2 = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
         "assistant.<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>"
         "{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN3 = ("{% set ns = namespace(last_user=-1) %}{% for message in messages %}"
         "{% if message['role'] == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}"
         "{% endfor %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
         "{% if message['role'] == 'assistant' and loop.index0 > ns.last_user %}"
         "<think>\n\n</think>\n\n{% endif %}{{ message['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA2 = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
          "{{ raise_exception('System role not supported') }}{% endif %}<start_of_turn>"
          "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
          "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
          "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
GEMMA3 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
          "{% set first = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
          "{% else %}{% set first = '' %}{% set turns = messages %}{% endif %}"
          "{% for message in turns %}<start_of_turn>"
          "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
          "{{ ((first if loop.first else '') + message['content']) | trim }}<end_of_turn>\n"
          "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
           "[INST] {{ message['content'] }} [/INST]{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] }}{{ eos_token }}{% else %}"
           "{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
           "{% endfor %}")
PHI3 = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
        "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n"
        "{% else %}{{ eos_token }}{% endif %}")


@dataclass
class Family:
    architecture: str                  # transformers class
    template: str | None
    end_of_turn: str                   # the token that closes an assistant turn
    eos: str                           # the tokenizer's EOS
    generation_eos: list[str]          # what generation_config.json lists
    bos: str | None = None
    pad: str | None = None             # None: the tokenizer has no pad token
    new_tokens: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)


FAMILIES = {
    "llama": Family("LlamaForCausalLM", LLAMA3, "<|eot_id|>", "<|end_of_text|>",
                    ["<|end_of_text|>", "<|eot_id|>"], bos="<|begin_of_text|>",
                    new_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                "<|end_header_id|>", "<|eot_id|>"]),
    "qwen2": Family("Qwen2ForCausalLM", QWEN2, "<|im_end|>", "<|im_end|>",
                    ["<|im_end|>", "<|endoftext|>"], pad="<|endoftext|>"),
    "qwen3": Family("Qwen3ForCausalLM", QWEN3, "<|im_end|>", "<|im_end|>",
                    ["<|im_end|>", "<|endoftext|>"], pad="<|endoftext|>",
                    new_tokens=["<think>", "</think>"], config={"head_dim": 8}),
    "gemma2": Family("Gemma2ForCausalLM", GEMMA2, "<end_of_turn>", "<eos>",
                     ["<eos>", "<end_of_turn>"], bos="<bos>", pad="<pad>",
                     new_tokens=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
                     config={"head_dim": 8, "query_pre_attn_scalar": 8,
                             "layer_types": ["sliding_attention", "full_attention"]}),
    "gemma3": Family("Gemma3ForCausalLM", GEMMA3, "<end_of_turn>", "<eos>",
                     ["<eos>", "<end_of_turn>"], bos="<bos>", pad="<pad>",
                     new_tokens=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
                     config={"head_dim": 8, "query_pre_attn_scalar": 8,
                             "layer_types": ["sliding_attention", "full_attention"]}),
    "mistral": Family("MistralForCausalLM", MISTRAL, "</s>", "</s>", ["</s>"], bos="<s>",
                      new_tokens=["<s>", "</s>", "[INST]", "[/INST]"],
                      config={"head_dim": 8}),
    "phi3": Family("Phi3ForCausalLM", PHI3, "<|end|>", "<|endoftext|>",
                   ["<|endoftext|>", "<|assistant|>", "<|end|>"], bos="<s>",
                   pad="<|endoftext|>",
                   new_tokens=["<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "base": Family("LlamaForCausalLM", None, "<|endoftext|>", "<|endoftext|>",
                   ["<|endoftext|>"], bos="<|endoftext|>"),
}
CONFIGS = {"LlamaForCausalLM": "LlamaConfig", "Qwen2ForCausalLM": "Qwen2Config",
           "Qwen3ForCausalLM": "Qwen3Config", "Gemma2ForCausalLM": "Gemma2Config",
           "Gemma3ForCausalLM": "Gemma3TextConfig", "MistralForCausalLM": "MistralConfig",
           "Phi3ForCausalLM": "Phi3Config"}


def make_family_model(name: str, out, tokenizer_from: str, seed: int = 0, **config) -> str:
    """A tiny random model of family `name` (hidden 32, 2 layers; `config` overrides) with
    its tokenizer and generation config, saved as a Hugging Face folder."""
    import transformers
    from transformers import AutoTokenizer, GenerationConfig

    family = FAMILIES[name]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    tokenizer.add_tokens(family.new_tokens, special_tokens=True)
    tokenizer.chat_template = family.template
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = (family.bos, family.eos,
                                                                     family.pad)
    ids = tokenizer.convert_tokens_to_ids
    config = getattr(transformers, CONFIGS[family.architecture])(**{
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 1024, "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, **family.config, **config})
    torch.manual_seed(seed)
    model = getattr(transformers, family.architecture)(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[ids(t) for t in family.generation_eos])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory, bundled_model_dir):
    root = tmp_path_factory.mktemp("families")
    return {name: make_family_model(name, root / name, bundled_model_dir) for name in FAMILIES}


ROOT = Path(__file__).resolve().parents[1]
CHAT = [name for name, family in FAMILIES.items() if family.template]
PAIR = {"prompt": [{"role": "user", "content": "What is 2 + 2?"}],
        "chosen": [{"role": "assistant", "content": "2 + 2 = 4"}],
        "rejected": [{"role": "assistant", "content": "2 + 2 = 5"}]}
SYSTEM = "You add numbers."


def subset(tmp_path, source: str, n: int) -> str:
    path = tmp_path / f"{Path(source).parent.name}.jsonl"
    path.write_text("\n".join((ROOT / source).read_text().splitlines()[:n]) + "\n")
    return str(path)


def make(algorithm: str, model: str, out, data: dict, **sections):
    """A one-step trainer of `algorithm` on `model` (the tests' tiny recipe)."""
    from alignment.config import recipe_from_dict
    from alignment.trainers.dpo import DPOTrainer
    from alignment.trainers.grpo import GRPOTrainer
    from alignment.trainers.ppo import PPOTrainer
    from alignment.trainers.reward_model import RewardModelTrainer
    from alignment.trainers.sft import SFTTrainer

    trainers = {"dpo": DPOTrainer, "grpo": GRPOTrainer, "ppo": PPOTrainer,
                "reward_model": RewardModelTrainer, "sft": SFTTrainer}
    recipe = {"algorithm": algorithm, "output_dir": str(out),
              "model": {"name": model, "dtype": "float64"},
              "data": {"eval": None, "max_prompt_length": 96, "max_length": 128, **data},
              "trainer": {"lr": 1e-3, "batch_size": 4, "max_steps": 1, "save_every": None,
                          "scheduler": "constant", "seed": 3},
              "eval": {"before_after": False},
              "logging": {"progress_bar": False}, **sections}
    return trainers[algorithm](recipe_from_dict(recipe))


def train(trainer) -> list[dict]:
    """Train; the logged rows of the steps."""
    trainer.train()
    rows = (trainer.output_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, rows) if "loss" in row]


def end_of_turn(tokenizer, name: str) -> int:
    return tokenizer.convert_tokens_to_ids(FAMILIES[name].end_of_turn)


# ------------------------------------------------------------------ tokenizer and rendering
@pytest.mark.parametrize("name", FAMILIES)
def test_eos_pad_and_the_completion_end(family_models, name, tmp_path):
    """Generation stops at the tokenizer's EOS and every EOS generation_config.json lists;
    a missing pad token is the EOS; a rendered completion's first stop token is the family's
    end-of-turn token, and only the template's tail (whitespace, a final EOS) follows it."""
    from alignment.data import load_examples, tokenize_examples
    from alignment.models import load_tokenizer, pooling_pad_id, stop_token_ids

    family = FAMILIES[name]
    tokenizer = load_tokenizer(family_models[name])
    ids = tokenizer.convert_tokens_to_ids
    assert stop_token_ids(tokenizer) == list(dict.fromkeys(
        [ids(family.eos), *(ids(t) for t in family.generation_eos)]))
    assert tokenizer.pad_token == (family.pad or family.eos)
    rows = tmp_path / "pair.jsonl"
    rows.write_text(json.dumps(PAIR) + "\n")
    [pair], _ = tokenize_examples(tokenizer, load_examples(str(rows), "preference"),
                                  max_length=128, max_prompt_length=96)
    for side, text in (("chosen", "2 + 2 = 4"), ("rejected", "2 + 2 = 5")):
        completion = pair.completion_ids[side]
        stop = next(k for k, t in enumerate(completion) if t in stop_token_ids(tokenizer))
        assert completion[stop] == end_of_turn(tokenizer, name)
        assert tokenizer.decode(completion[:stop]).strip().endswith(text)
        assert not tokenizer.decode(completion[stop + 1:], skip_special_tokens=True).strip()
    if family.template:   # prompt + completion is the conversation as the template writes it
        full = tokenizer.apply_chat_template(PAIR["prompt"] + PAIR["chosen"], tokenize=False)
        assert tokenizer.decode(pair.prompt_ids + pair.completion_ids["chosen"]) == full
    pool = pooling_pad_id(tokenizer, len(tokenizer))   # a classifier's pad: never in the text
    assert pool not in stop_token_ids(tokenizer)
    assert pool not in pair.prompt_ids + pair.completion_ids["chosen"]


def test_a_tokenizer_without_eos_takes_the_generation_configs(family_models, tmp_path):
    import shutil

    from alignment.models import load_tokenizer, stop_token_ids

    folder = tmp_path / "no-eos"
    shutil.copytree(family_models["llama"], folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "eos_token": None}))
    tokenizer = load_tokenizer(str(folder))
    assert tokenizer.eos_token == tokenizer.pad_token == "<|end_of_text|>"
    assert stop_token_ids(tokenizer) == tokenizer.convert_tokens_to_ids(
        ["<|end_of_text|>", "<|eot_id|>"])


@pytest.mark.parametrize("name", CHAT)
def test_system_prompt_in_training_and_in_the_exported_template(family_models, name):
    """data.system_prompt reaches every template: as a system turn, or folded into the first
    user turn where the template refuses one (Gemma 2, Mistral), exactly as Gemma 3's own
    template folds it; the exported template then prompts the same way on its own."""
    import copy

    from alignment.data import render_prompt
    from alignment.data.templates import refuses_system
    from alignment.models import load_tokenizer, set_default_system_prompt

    tokenizer = load_tokenizer(family_models[name])
    user = PAIR["prompt"]
    trained = render_prompt(tokenizer, user, system_prompt=SYSTEM)
    assert SYSTEM in trained
    assert refuses_system(tokenizer) == (name in ("gemma2", "mistral"))
    if refuses_system(tokenizer):
        folded = [{"role": "user", "content": f"{SYSTEM}\n\n{user[0]['content']}"}]
        assert trained == render_prompt(tokenizer, folded)
    if name == "gemma2":   # the same text Gemma 3's template writes for a system turn
        gemma3 = load_tokenizer(family_models["gemma3"])
        assert trained == render_prompt(gemma3, user, system_prompt=SYSTEM)
    exported = copy.deepcopy(tokenizer)
    set_default_system_prompt(exported, SYSTEM)
    assert render_prompt(exported, user) == trained


def test_base_model_plain_format_and_its_limits(family_models, capsys):
    """No chat template: the prompt's text, then the completion's text and EOS (said once);
    what needs a template (a system prompt, several turns) is a clear error."""
    from alignment.data import DataError, render_completion, render_prompt, templates
    from alignment.models import load_tokenizer

    templates._SAID.clear()
    tokenizer = load_tokenizer(family_models["base"])    # says it once, at start-up
    prompt = render_prompt(tokenizer, PAIR["prompt"])
    assert prompt == "What is 2 + 2?"
    assert render_completion(tokenizer, prompt, PAIR["prompt"], PAIR["chosen"]) == \
        "2 + 2 = 4<|endoftext|>"
    render_prompt(tokenizer, [{"role": "user", "content": "again"}], plain=True)
    assert capsys.readouterr().err.count("has no chat template: plain prompt format") == 1
    with pytest.raises(DataError, match="no chat template, so data.system_prompt"):
        render_prompt(tokenizer, PAIR["prompt"], system_prompt=SYSTEM)
    with pytest.raises(DataError, match=r"a prompt of 2 turn\(s\) \(system, user\)"):
        render_prompt(tokenizer, [{"role": "system", "content": SYSTEM}, *PAIR["prompt"]])


# ------------------------------------------------------------------ sliding windows
def alone_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log p of each completion token, the sequence on its own (a plain causal mask)."""
    ids = torch.tensor([prompt + completion])
    logits = model(ids, position_ids=torch.arange(ids.shape[1])[None]).logits
    logps = logits[0, len(prompt) - 1:-1].log_softmax(-1)
    return logps.gather(-1, torch.tensor(completion)[:, None])[:, 0]


WINDOWED = {"prompts": [list(range(100, 130)), list(range(200, 210))],   # 16-token windows
            "groups": [[list(range(300, 312)), [13]], [[20, 21, 22], list(range(400, 425))]]}


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "mistral"])
def test_packed_layouts_respect_the_sliding_window(tmp_path, bundled_model_dir, name):
    """Sequences longer than a 16-token window: the packed 4-D-mask layouts (DPO's pairs,
    the online trainers' groups) give each completion the log-probs it gets alone."""
    from alignment.models import load_causal_lm
    from alignment.trainers.sequences import (
        collate_groups,
        collate_pairs,
        group_token_logps,
        pair_logps,
    )

    model = load_causal_lm(make_family_model(name, tmp_path / name, bundled_model_dir,
                                             sliding_window=16), torch.float64)
    prompts, groups = WINDOWED["prompts"], WINDOWED["groups"]
    alone = [[alone_logps(model, p, c) for c in g] for p, g in zip(prompts, groups, strict=True)]
    grouped = group_token_logps(model, collate_groups(prompts, groups, 0))     # (4, T)
    flat = [lp for g in alone for lp in g]
    for row, expected in enumerate(flat):
        torch.testing.assert_close(grouped[row, :len(expected)], expected, rtol=0, atol=1e-10)
    pairs = pair_logps(model, collate_pairs(prompts, [g[0] for g in groups],
                                            [g[1] for g in groups], pad_id=0))
    expected = torch.stack([alone[0][0].sum(), alone[1][0].sum(), alone[0][1].sum(),
                            alone[1][1].sum()])
    torch.testing.assert_close(pairs, expected, rtol=0, atol=1e-10)


def test_critic_values_respect_the_sliding_window(tmp_path, bundled_model_dir):
    from alignment.trainers.sequences import collate_groups
    from alignment.value_model import load_critic, token_values

    path = make_family_model("gemma2", tmp_path / "gemma2", bundled_model_dir, sliding_window=16)
    critic = load_critic("policy", path, torch.float64)
    torch.nn.init.normal_(critic.score.weight)     # (a fresh critic's head is zero)
    prompt, completion = WINDOWED["prompts"][0], WINDOWED["groups"][0][0]
    batch = collate_groups([prompt], [[completion]], 0)     # one row: prompt | completion
    ids, width = batch["input_ids"], batch["input_ids"].shape[1]
    assert ids[0].tolist() == prompt + completion
    packed = token_values(critic, input_ids=ids, attention_mask=batch["attention_mask"],
                          position_ids=batch["position_ids"], keep=width)
    alone = token_values(critic, input_ids=ids, attention_mask=torch.ones_like(ids),
                         position_ids=torch.arange(width)[None], keep=width)
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-8)


# ------------------------------------------------------------------ the trainers
@pytest.mark.parametrize("name", FAMILIES)
def test_dpo_first_step_and_the_exported_folder(family_models, name, tmp_path):
    """Step 1 of DPO from the reference is ln 2 exactly; final/ reloads with the family's
    template (carrying data.system_prompt) and EOS ids, and prompts as training did."""
    from alignment.data import render_prompt
    from alignment.models import load_tokenizer, stop_token_ids

    chat = FAMILIES[name].template is not None
    trainer = make("dpo", family_models[name], tmp_path / "dpo",
                   {"train": subset(tmp_path, "data/arithmetic/preference_chat/train.jsonl", 4),
                    "system_prompt": SYSTEM if chat else None},
                   dpo={"beta": 0.1, "reference": "model"})
    rows = train(trainer)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)   # -log σ(0)
    final = load_tokenizer(str(tmp_path / "dpo" / "final"))
    assert stop_token_ids(final) == stop_token_ids(trainer.tokenizer)
    if not chat:
        assert final.chat_template is None
        return
    assert final.chat_template.endswith(FAMILIES[name].template)
    first = json.loads((tmp_path / "preference_chat.jsonl").read_text().splitlines()[0])
    pair = next(p for p in trainer.train_set if p.where.endswith(" line 1"))
    assert final(render_prompt(final, first["prompt"]),
                 add_special_tokens=False)["input_ids"] == pair.prompt_ids



@pytest.mark.parametrize("name", FAMILIES)
def test_sft_demonstrations_end_at_the_end_of_turn(family_models, name, tmp_path):
    """SFT trains up to the first EOS id of a demonstration, the family's end of turn, and
    not on what the template writes after it (Phi-3's final <|endoftext|>)."""
    from alignment.models import stop_token_ids

    trainer = make("sft", family_models[name], tmp_path / "sft",
                   {"train": subset(tmp_path, "data/arithmetic/sft/train.jsonl", 2)})
    demo = trainer.train_set[0]
    assert demo.chosen_ids[-1] == end_of_turn(trainer.tokenizer, name)
    assert not set(stop_token_ids(trainer.tokenizer)) & set(demo.chosen_ids[:-1])

@pytest.mark.parametrize("name", FAMILIES)
def test_grpo_rollouts_stop_at_the_family_eos(family_models, name, tmp_path, monkeypatch):
    """With the end-of-turn token made likely, every rollout ends at its first EOS id, the
    family's end of turn (for Llama 3 one the tokenizer's EOS is not), and nothing after."""
    from alignment.models import stop_token_ids
    from alignment.rollout.hf import HFEngine

    trainer = make("grpo", family_models[name], tmp_path / "grpo",
                   {"train": subset(tmp_path, "data/arithmetic/add2/train.jsonl", 4)},
                   grpo={"prompts_per_step": 2, "num_generations": 4},
                   rollout={"backend": "hf", "max_new_tokens": 8, "temperature": 1.0},
                   rewards=[{"name": "exact_answer"}])
    eot = end_of_turn(trainer.tokenizer, name)
    bias = torch.zeros(trainer.policy.config.vocab_size)
    bias[eot] = 11.0     # p(end of turn) ≈ 0.4 at each step: completions of every length
    trainer.policy.get_output_embeddings().register_forward_hook(
        lambda module, args, logits: logits + bias.to(logits.dtype))
    seen = []
    generate = HFEngine.generate
    monkeypatch.setattr(HFEngine, "generate",
                        lambda *a, **k: seen.append(generate(*a, **k)) or seen[-1])
    rows = train(trainer)
    stops = set(stop_token_ids(trainer.tokenizer, trainer.policy))
    ends = []
    for ids, reason in ((i, r) for x in seen for i, r in zip(x.completion_ids,
                                                               x.finish_reasons, strict=True)):
        assert not stops & set(ids[:-1]), ids      # nothing generated past an EOS
        assert (ids[-1] in stops) == (reason == "stop")
        ends += [ids[-1]] if reason == "stop" else []
    assert set(ends) == {eot}
    assert math.isfinite(rows[0]["loss"])
    assert rows[0]["rollout/logprob_gap_max"] < 1e-4   # the engine samples the trained model


@pytest.mark.parametrize("name", FAMILIES)
def test_ppo_with_a_critic(family_models, name, tmp_path):
    """PPO's critic (the family's sequence classifier, from the policy's weights) and the
    first step: finite losses, π_old = π_ref, the engine's log-probs are the trainer's."""
    trainer = make("ppo", family_models[name], tmp_path / "ppo",
                   {"train": subset(tmp_path, "data/arithmetic/add2/train.jsonl", 4)},
                   ppo={"prompts_per_step": 2, "samples_per_prompt": 2, "epochs": 1},
                   rollout={"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
                   rewards=[{"name": "regex", "pattern": "^ "}])
    [row] = train(trainer)
    assert all(math.isfinite(row[k]) for k in ("loss/policy", "loss/value", "critic/values"))
    assert row["policy/kl"] == pytest.approx(0.0, abs=1e-6)
    assert row["rollout/logprob_gap_max"] < 1e-4


@pytest.mark.parametrize("name", FAMILIES)
def test_reward_model_scores_as_it_trained(family_models, name, tmp_path):
    """The exported reward model, loaded by the `reward_model` scorer, gives a pair the
    reward the trainer computed for it: same rendering (the base model's plain format read
    from the folder, not told), same tokens (Llama 3's prompt and completion tokenised
    apart), same pooled token (a pad id no text holds: Phi-3 and the base model end with
    their pad = EOS)."""
    from reward_models import build_scorer

    trainer = make("reward_model", family_models[name], tmp_path / "rm",
                   {"train": subset(tmp_path, "data/arithmetic/preference_chat/train.jsonl", 4)})
    train(trainer)
    pair = next(p for p in trainer.train_set if p.where.endswith(" line 1"))
    trainer.model.eval()
    with torch.no_grad():
        _, metrics = trainer.compute_loss(trainer.collate([pair]))
    first = json.loads((tmp_path / "preference_chat.jsonl").read_text().splitlines()[0])
    scorer = build_scorer("reward_model", path=str(tmp_path / "rm" / "final"))
    assert scorer.model.config.pad_token_id == trainer.pool_pad_id
    [reward] = scorer.score([first["prompt"]], [first["chosen"][0]["content"]]).rewards
    assert reward == pytest.approx(metrics["rewards/chosen"].item(), abs=1e-4)



@pytest.mark.parametrize("name", ["llama", "gemma2", "phi3"])
def test_greedy_eval_stops_at_the_end_of_turn(family_models, name, tmp_path):
    """`alignment eval` (and the trainers' before/after eval) stops at the family's end of
    turn, an EOS only the generation config lists, instead of running to max_new_tokens."""
    from alignment.evaluation import EvalSettings, evaluate
    from alignment.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(family_models[name])
    model = load_causal_lm(family_models[name], torch.float32)
    eot = end_of_turn(tokenizer, name)
    assert eot != tokenizer.eos_token_id
    bias = torch.zeros(model.config.vocab_size)
    bias[eot] = 100.0                     # the end of turn is every step's greedy token
    model.get_output_embeddings().register_forward_hook(
        lambda module, args, logits: logits + bias.to(logits.dtype))
    result = evaluate(name, subset(tmp_path, "data/arithmetic/add2/train.jsonl", 3),
                      EvalSettings(max_new_tokens=8, batch_size=2), loaded=(model, tokenizer))
    assert result["generation"]["new_tokens"] == 3          # one token each: the end of turn
    assert [s["completion"] for s in result["samples"]] == ["", "", ""]

@pytest.mark.vllm
def test_vllm_gemma2_stops_at_the_end_of_turn_and_follows_sync(tmp_path, bundled_model_dir):
    """vLLM (CPU) runs Gemma 2 (no lm_head: the tied output embedding is not sent on sync),
    samples what the HF engine samples, and stops at <end_of_turn>, an EOS only the
    generation config lists."""
    pytest.importorskip("vllm")
    from alignment.models import load_causal_lm, load_tokenizer
    from alignment.rollout import SamplingParams, make_engine

    # (vLLM's CPU attention has kernels for head sizes 32, 64, ..., not the tests' 8)
    path = make_family_model("gemma2", tmp_path / "gemma2", bundled_model_dir, head_dim=32,
                             query_pre_attn_scalar=32, num_attention_heads=2,
                             num_key_value_heads=1)
    tokenizer, model = load_tokenizer(path), load_causal_lm(path)
    engine = make_engine("vllm", model=model, tokenizer=tokenizer, model_path=path,
                         dtype="float32", kv_cache_gb=0.05, max_model_len=256)
    hf = make_engine("hf", model=model, tokenizer=tokenizer)
    prompt = tokenizer("What is 2 + 2?", add_special_tokens=False)["input_ids"]
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    first = engine.generate([prompt], sampling=greedy)
    assert first.completion_ids == hf.generate([prompt], sampling=greedy).completion_ids
    assert first.finish_reasons == ["length"]
    # <end_of_turn> (absent from the prompt) becomes the greedy first token: its tied
    # embedding row 3x that of the current first token, whose logit is the largest
    eot = end_of_turn(tokenizer, "gemma2")
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[eot] = 3 * embeddings[first.completion_ids[0][0]]
    engine.sync_weights(model)
    after = engine.generate([prompt], sampling=greedy)
    assert after.completion_ids == [[eot]] and after.finish_reasons == ["stop"]
    assert hf.generate([prompt], sampling=greedy).completion_ids == [[eot]]
