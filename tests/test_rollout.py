"""The rollout engine: HF backend on tiny models; vLLM vs HF on the bundled model."""

from __future__ import annotations

import pytest
import torch

from alignment.losses import token_logps
from alignment.rollout import SamplingParams, logprob_gap, make_engine
from alignment.trainers.sequences import collate_sequences


def recompute(model, prompts, rollouts, temperature=1.0, top_k=0, top_p=1.0):
    """The trainer's view: log-probs of the sampled tokens, one forward, under the sampling
    distribution (temperature, then top-k / top-p filtered and renormalised)."""
    batch = collate_sequences([prompts[i] for i in rollouts.prompt_index],
                              rollouts.completion_ids, pad_id=0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"],
                       logits_to_keep=batch["completion_mask"].shape[1] + 1).logits[:, :-1]
    return token_logps(logits, batch["input_ids"][:, batch["prompt_width"]:],
                       temperature=temperature, top_k=top_k, top_p=top_p)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from alignment.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = [tokenizer(t, add_special_tokens=False).input_ids
               for t in ["What is 2 + 3?", "Compute 10 - 4 please.", "x"]]
    return model, tokenizer, prompts


def test_hf_layout_and_groups(tiny):
    model, tokenizer, prompts = tiny
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    r = engine.generate(prompts, n=3, sampling=SamplingParams(temperature=1.0,
                                                              max_new_tokens=7, seed=0))
    assert r.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(1 <= len(c) <= 7 for c in r.completion_ids)
    for c, lp, reason in zip(r.completion_ids, r.logprobs, r.finish_reasons, strict=True):
        assert len(lp) == len(c)
        assert reason == ("stop" if c[-1] == tokenizer.eos_token_id else "length")
        assert reason == "stop" or len(c) == 7
    batch = r.padded(tokenizer.pad_token_id)
    assert batch["completion_ids"].shape == (9, max(len(c) for c in r.completion_ids))
    assert batch["completion_mask"].sum() == sum(len(c) for c in r.completion_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_hf_sampling_logprobs_match_the_trainer(tiny, temperature):
    model, tokenizer, prompts = tiny
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    r = engine.generate(prompts, n=4, sampling=SamplingParams(temperature=temperature,
                                                              max_new_tokens=12, seed=1))
    batch = r.padded(tokenizer.pad_token_id)
    gap = logprob_gap(batch["sampling_logps"], recompute(model, prompts, r, temperature),
                      batch["completion_mask"])
    assert gap["rollout/logprob_gap_max"] < 1e-4, gap


@pytest.mark.parametrize("seeded", [True, False])
@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 0, 0.9), (1.0, 20, 1.0),
                                                       (0.8, 20, 0.8)])
def test_hf_filtered_sampling_logprobs_match_the_trainer(tiny, seeded, temperature, top_k, top_p):
    """Engine/trainer agreement under top-k / top-p: both renormalise over the kept tokens
    the same way (fp32), for HF's own sampler and the per-sample-seeded one."""
    model, tokenizer, prompts = tiny
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p,
                              max_new_tokens=12, seed=5 if seeded else None)
    r = engine.generate(prompts, n=4, sampling=sampling)
    batch = r.padded(tokenizer.pad_token_id)
    trainer = recompute(model, prompts, r, temperature, top_k, top_p)
    gap = logprob_gap(batch["sampling_logps"], trainer, batch["completion_mask"])
    assert gap["rollout/logprob_gap_max"] < 1e-4, gap
    # and the filter matters: without it the trainer's numbers are off
    unfiltered = recompute(model, prompts, r, temperature)
    assert logprob_gap(batch["sampling_logps"], unfiltered,
                       batch["completion_mask"])["rollout/logprob_gap_max"] > 1e-3


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 50)])
def test_hf_seeded_samples_do_not_depend_on_the_batch(tiny, temperature, top_k):
    """Per-prompt seeds: a prompt's samples are the same alone or in any batch (what makes
    2 processes sample what 1 process samples); log-probs still match the trainer's."""
    model, tokenizer, prompts = tiny
    sampling = SamplingParams(temperature=temperature, top_k=top_k, max_new_tokens=10)
    together = make_engine("hf", model=model, tokenizer=tokenizer).generate(
        prompts, n=3, sampling=sampling, seeds=[7, 8, 9])
    split = make_engine("hf", model=model, tokenizer=tokenizer, batch_size=2)
    last = split.generate(prompts[2:], n=3, sampling=sampling, seeds=[9])
    first = split.generate(prompts[:2][::-1], n=3, sampling=sampling, seeds=[8, 7])
    assert together.completion_ids == (first.completion_ids[3:] + first.completion_ids[:3]
                                       + last.completion_ids)
    other = split.generate(prompts, n=3, sampling=sampling, seeds=[1, 2, 3])
    assert other.completion_ids != together.completion_ids
    batch = together.padded(tokenizer.pad_token_id)
    gap = logprob_gap(batch["sampling_logps"],
                      recompute(model, prompts, together, temperature),
                      batch["completion_mask"])
    if top_k == 0:   # (top-k renormalises: the trainer's full-vocabulary log-probs differ)
        assert gap["rollout/logprob_gap_max"] < 1e-4, gap
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        split.generate(prompts, sampling=sampling, seeds=[1, 2])


def test_hf_seeded_sampling_follows_the_model_distribution(tiny):
    """Gumbel-max draws are samples from p: first-token frequencies over 3000 draws match
    the model's next-token probabilities (total variation well under sampling noise)."""
    model, tokenizer, prompts = tiny
    engine = make_engine("hf", model=model, tokenizer=tokenizer, batch_size=1000)
    sampling = SamplingParams(temperature=1.0, top_k=8, max_new_tokens=1)
    r = engine.generate(prompts[:1], n=3000, sampling=sampling, seeds=[5])
    with torch.no_grad():
        logits = model(torch.tensor([prompts[0]])).logits[0, -1]
    top = logits.topk(8)
    p = torch.zeros_like(logits)
    p[top.indices] = top.values.softmax(-1)
    counts = torch.bincount(torch.tensor([c[0] for c in r.completion_ids]),
                            minlength=len(p)).float()
    tv = 0.5 * (counts / counts.sum() - p).abs().sum().item()
    assert tv < 0.04, tv   # ~0.02 expected from 3000 draws over 8 outcomes


def test_hf_greedy_is_deterministic_and_prefixes_are_forced(tiny):
    model, tokenizer, prompts = tiny
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    greedy = SamplingParams(temperature=0, max_new_tokens=6)
    assert engine.generate(prompts, sampling=greedy).completion_ids == \
        engine.generate(prompts, sampling=greedy).completion_ids
    prefixes = [[11, 12, 13], [], [14]]
    r = engine.generate(prompts, n=2, sampling=greedy, prefixes=prefixes)
    for c, f, i in zip(r.completion_ids, r.forced, r.prompt_index, strict=True):
        assert c[:len(prefixes[i])] == prefixes[i]
        assert f == [True] * len(prefixes[i]) + [False] * (len(c) - len(prefixes[i]))
    # the forced tokens' log-probs are the model's own (checked against a recomputation)
    batch = r.padded(tokenizer.pad_token_id)
    gap = logprob_gap(batch["sampling_logps"], recompute(model, prompts, r),
                      batch["completion_mask"])
    assert gap["rollout/logprob_gap_max"] < 1e-4
    assert batch["forced_mask"].sum() == 2 * (3 + 0 + 1)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown rollout backend 'tgi'"):
        make_engine("tgi", model=None, tokenizer=None)


# ------------------------------------------------------------------ vLLM (real engine)

@pytest.fixture(scope="module")
def bundled_fp32(bundled_model_dir):
    from transformers import AutoModelForCausalLM

    from alignment.models import load_tokenizer

    tokenizer = load_tokenizer(bundled_model_dir)
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                             add_generation_prompt=True)
               for q in ["What is 12 + 30?", "Name a colour.", "What is 7 times 8?"]]
    prompts = [p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p
               for p in prompts]
    return model, tokenizer, prompts


@pytest.fixture(scope="module")
def vllm_engine(bundled_model_dir, bundled_fp32):
    pytest.importorskip("vllm")
    from alignment.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(bundled_model_dir, bundled_fp32[1], dtype="float32", max_model_len=512,
                      kv_cache_gb=0.5)


@pytest.mark.vllm
@pytest.mark.bundled
def test_vllm_kv_cache_is_the_size_asked_for(vllm_engine):
    """`kv_cache_gb` reaches vLLM in bytes (once whole GiB, at least 1): 0.5 GiB in fp32 is
    0.5 x 2^30 / (128 tokens x 2 x 30 layers x 3 KV heads x 64 x 4 bytes) = 91.02 blocks."""
    if torch.cuda.is_available():
        pytest.skip("on CUDA the cache is what gpu_memory_utilization leaves")
    assert vllm_engine.llm.llm_engine.vllm_config.cache_config.num_gpu_blocks == 91


@pytest.mark.vllm
@pytest.mark.bundled
def test_vllm_matches_hf_then_follows_sync(vllm_engine, bundled_fp32):
    from alignment.rollout.vllm_engine import StaleWeightsError

    model, tokenizer, prompts = bundled_fp32
    hf = make_engine("hf", model=model, tokenizer=tokenizer)
    greedy = SamplingParams(temperature=0, max_new_tokens=16)
    assert vllm_engine.generate(prompts, sampling=greedy).completion_ids == \
        hf.generate(prompts, sampling=greedy).completion_ids

    # sampling log-probs vs the trainer's recomputation (reported in bench/RESULTS.md)
    r = vllm_engine.generate(prompts, n=4, sampling=SamplingParams(temperature=0.8,
                                                                   max_new_tokens=16, seed=0))
    batch = r.padded(tokenizer.pad_token_id)
    gap = logprob_gap(batch["sampling_logps"], recompute(model, prompts, r, 0.8),
                      batch["completion_mask"])
    print("vLLM vs trainer log-prob gap (fp32):", gap)
    assert gap["rollout/logprob_gap_max"] < 1e-2, gap

    # change the model: the engine is now stale, and the probe says so
    with torch.no_grad():
        torch.manual_seed(0)
        for layer in model.model.layers[:4]:
            layer.mlp.down_proj.weight.add_(0.05 * torch.randn_like(layer.mlp.down_proj.weight))
    with pytest.raises(StaleWeightsError):
        vllm_engine.verify(model)
    seconds = vllm_engine.sync_weights(model)
    print(f"sync_weights: {seconds:.2f} s, probe gap {vllm_engine.last_probe_gap:.2e}")
    assert vllm_engine.last_probe_gap < 1e-2
    changed = hf.generate(prompts, sampling=greedy).completion_ids
    assert vllm_engine.generate(prompts, sampling=greedy).completion_ids == changed

    prefixes = [[504, 3458], [], [30]]
    r = vllm_engine.generate(prompts, n=2, sampling=greedy, prefixes=prefixes)
    for c, f, i in zip(r.completion_ids, r.forced, r.prompt_index, strict=True):
        assert c[:len(prefixes[i])] == prefixes[i] and sum(f) == len(prefixes[i])


@pytest.mark.vllm
@pytest.mark.bundled
def test_vllm_filtered_sampling_logprobs_match_the_trainer(vllm_engine, bundled_fp32):
    """vLLM reports processed log-probs (after temperature, top-k, top-p): the trainer's
    recomputation with the same filters agrees in fp32 up to kernel differences."""
    model, tokenizer, prompts = bundled_fp32
    vllm_engine.sync_weights(model)     # (another test may have changed the model)
    sampling = SamplingParams(temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=16, seed=0)
    r = vllm_engine.generate(prompts, n=4, sampling=sampling)
    batch = r.padded(tokenizer.pad_token_id)
    gap = logprob_gap(batch["sampling_logps"], recompute(model, prompts, r, 0.8, 20, 0.9),
                      batch["completion_mask"])
    print("vLLM vs trainer log-prob gap, top-k 20 / top-p 0.9 (fp32):", gap)
    assert gap["rollout/logprob_gap_max"] < 1e-3, gap      # measured: 2.9e-5


@pytest.mark.vllm
@pytest.mark.bundled
def test_vllm_episodes_equal_hf_and_keep_the_trainers_logprobs(vllm_engine, bundled_fp32):
    """Multi-turn: vLLM continues each episode from its whole context (prompt, turns,
    replies) exactly as HF does (greedy), and its sampling log-probs of the model's tokens
    agree with one trainer forward over the episode (replies masked)."""
    from alignment.environments import Environment, Step
    from alignment.models import stop_token_ids
    from alignment.rollout.episodes import EpisodeLimits, ReplyRenderer, play_episodes

    class AskTwice(Environment):
        def reset(self, row, verify):
            self.turns = 0

        def step(self, text):
            self.turns += 1
            return Step(observation="Are you sure? Answer again.", done=self.turns >= 2)

    model, tokenizer, prompts = bundled_fp32
    vllm_engine.sync_weights(model)     # (another test may have changed the model)
    renderer = ReplyRenderer(tokenizer, stop_token_ids(tokenizer, model))

    def play(engine, sampling, n=1):
        first = engine.generate(prompts, n=n, sampling=sampling)
        return play_episodes(engine, first, [AskTwice() for _ in range(len(first))],
                             rows=[{}] * len(prompts), verify=lambda i, t: 0.0,
                             renderer=renderer, sampling=sampling,
                             limits=EpisodeLimits(max_turns=2, max_episode_tokens=64))

    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    hf = make_engine("hf", model=model, tokenizer=tokenizer)
    (ours, info), (theirs, _) = play(vllm_engine, greedy), play(hf, greedy)
    assert ours.completion_ids == theirs.completion_ids and ours.forced == theirs.forced
    assert info.turns == [2, 2, 2]
    r, _ = play(vllm_engine, SamplingParams(temperature=0.8, max_new_tokens=12, seed=0), n=2)
    batch = r.padded(tokenizer.pad_token_id)
    model_tokens = batch["completion_mask"] & ~batch["forced_mask"]
    assert batch["forced_mask"].any()
    gap = logprob_gap(batch["sampling_logps"], recompute(model, prompts, r, 0.8), model_tokens)
    assert gap["rollout/logprob_gap_max"] < 1e-2, gap
