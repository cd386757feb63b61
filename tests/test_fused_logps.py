"""Log-probs without the (N, V) logits: `fused_token_logps` and every model-level path that
uses it give the plain path's numbers and gradients (float64, exact to rounding)."""

from __future__ import annotations

import shutil

import pytest
import torch

from alignment.errors import TrainingError
from alignment.losses import fused_token_logps, token_logps
from alignment.model_logps import forward_hidden, labels_logps
from alignment.trainers.sequences import (
    collate_groups,
    collate_pairs,
    collate_separate,
    collate_sequences,
    completion_token_logps,
    group_token_logps,
    group_token_logps_as_sampled,
    pair_logps,
)


def _plain(hidden, weight, bias, labels, temperature, softcap, scale, top_k=0, top_p=1.0):
    z = hidden @ weight.T + (0 if bias is None else bias)
    z = z * scale
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return token_logps(z[None], labels[None], temperature, top_k, top_p)[0]


HEADS = [  # (bias, temperature, softcap, scale): Llama, sampling at 0.7, Gemma 2, Cohere-like
    (False, 1.0, None, 1.0), (False, 0.7, None, 1.0), (False, 1.0, 3.0, 1.0), (True, 1.3, 5.0, 0.5)]


@pytest.mark.parametrize("bias, temperature, softcap, scale", HEADS)
@pytest.mark.parametrize("chunk", [97, 10_000])   # many ragged chunks; one chunk
def test_values_and_gradients_equal_the_plain_path(bias, temperature, softcap, scale, chunk):
    g = torch.Generator().manual_seed(0)
    n, h, v = 23, 8, 101
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    labels[3] = -100                       # out of range: any finite value, masked by callers
    upstream = torch.randn(n, generator=g, dtype=torch.float64)
    upstream[3] = 0
    leaves = [hidden, weight] + ([b] if bias else [])
    expected = _plain(hidden, weight, b, labels, temperature, softcap, scale)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
    got = fused_token_logps(hidden, weight, labels, bias=b, temperature=temperature,
                            softcap=softcap, scale=scale, chunk_elements=chunk)
    got_grads = torch.autograd.grad((got * upstream).sum(), leaves)
    assert got.dtype == torch.float64 and got.shape == (n,)
    keep = labels >= 0
    torch.testing.assert_close(got[keep], expected[keep], rtol=0, atol=1e-12)
    for a, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 13, (7,), generator=g)
    assert torch.autograd.gradcheck(
        lambda h, w, b: fused_token_logps(h, w, labels, bias=b, softcap=2.0, temperature=0.8,
                                          chunk_elements=20), (hidden, weight, bias))


@pytest.mark.parametrize("top_k, top_p", [(40, 1.0), (0, 0.9), (60, 0.95)])
def test_sampler_filters_as_the_plain_path(top_k, top_p):
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(31, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(101, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 101, (31,), generator=g)
    expected = _plain(hidden, weight, None, labels, 0.9, None, 1.0, top_k, top_p)
    got = fused_token_logps(hidden, weight, labels, temperature=0.9, top_k=top_k, top_p=top_p,
                            chunk_elements=300)
    assert torch.equal(got.isinf(), expected.isinf()) and (~got.isinf()).any()
    torch.testing.assert_close(got[~got.isinf()], expected[~expected.isinf()], rtol=0, atol=1e-12)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="hidden must be"):
        fused_token_logps(torch.zeros(3, 4), torch.zeros(5, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        fused_token_logps(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long))


# --- every model-level path against full logits of each sequence on its own ------------

PROMPTS = [[1, 2, 3, 4, 5], [1, 2, 6], [7, 8, 9, 10]]
CHOSEN = [[20, 21, 22], [23, 24], [25]]
REJECTED = [[30], [31, 32, 33, 34], [35, 36]]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)


def _one_by_one(model, prompts, completions, temperature=1.0, top_p=1.0) -> list[torch.Tensor]:
    out = []
    for p, c in zip(prompts, completions, strict=True):
        logits = model(torch.tensor([p + c])).logits[:, len(p) - 1:-1]
        out.append(token_logps(logits, torch.tensor([c]), temperature, top_p=top_p)[0])
    return out


def _grads(model, value: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    weights = torch.linspace(-1, 1, value.numel(), dtype=value.dtype).view(value.shape)
    (value * weights).sum().backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return grad


def test_pair_layout(model):
    batch = collate_pairs(PROMPTS, CHOSEN, REJECTED, pad_id=0)
    got = pair_logps(model, batch)
    expected = torch.stack([t.sum() for t in _one_by_one(model, PROMPTS * 2, CHOSEN + REJECTED)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(_grads(model, pair_logps(model, batch)), _grads(model, expected),
                               rtol=1e-6, atol=1e-6)   # masked vs plain attention kernels


def test_completion_layout(model):
    batch = collate_sequences(PROMPTS, CHOSEN, pad_id=0)
    got = completion_token_logps(model, batch, temperature=0.7)
    expected = _one_by_one(model, PROMPTS, CHOSEN, temperature=0.7)
    mask = batch["completion_mask"]
    assert (got[~mask] == 0).all()
    for row, e in enumerate(expected):
        torch.testing.assert_close(got[row, :len(e)], e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("collate", [collate_groups, collate_separate])
def test_group_layouts(model, collate):
    groups = [[CHOSEN[0], REJECTED[0]], [CHOSEN[1]], [CHOSEN[2], REJECTED[2], [40, 41]]]
    batch = collate(PROMPTS, groups, pad_id=0)
    got = group_token_logps(model, batch, temperature=0.9)
    flat_p = [p for p, grp in zip(PROMPTS, groups, strict=True) for _ in grp]
    flat_c = [c for grp in groups for c in grp]
    expected = _one_by_one(model, flat_p, flat_c, temperature=0.9)
    for row, e in enumerate(expected):
        torch.testing.assert_close(got[row, :len(e)], e, rtol=0, atol=1e-10)
    logps, sampled = group_token_logps_as_sampled(model, batch, temperature=0.9, top_p=0.999)
    assert not sampled.requires_grad and logps.requires_grad
    expected = _one_by_one(model, flat_p, flat_c, temperature=0.9, top_p=0.999)
    for row, e in enumerate(expected):
        torch.testing.assert_close(sampled[row, :len(e)], e, rtol=0, atol=1e-10)
        assert (e > logps[row, :len(e)]).all()   # renormalised over fewer tokens


def test_softcapped_head_gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=8, final_logit_softcapping=2.0)
    gemma = Gemma2ForCausalLM(config).double()
    with torch.no_grad():
        gemma.lm_head.weight.mul_(40)      # logits well past the cap: tanh matters
    ids = torch.tensor([[3, 9, 17, 4, 22, 5]])
    logits = gemma(input_ids=ids).logits[0, :-1]
    expected = token_logps(logits[None], ids[:, 1:])[0]
    _, hidden = forward_hidden(gemma, input_ids=ids)
    got = labels_logps(gemma, hidden[0, :-1], ids[0, 1:])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_a_head_read_wrongly_is_refused(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    odd = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    forward = odd.forward

    def doubled(**kwargs):   # a family whose logits are not lm_head(last hidden state)
        out = forward(**kwargs)
        out.logits = out.logits * 2
        return out

    odd.forward = doubled
    with pytest.raises(TrainingError, match="not its LM head applied"):
        forward_hidden(odd, input_ids=torch.tensor([[1, 2, 3]]))


# --- packed layouts: prefix trees give the padded layouts' numbers -----------------------

from alignment.trainers.sequences import (  # noqa: E402
    collate_demonstrations,
    collate_online,
    collate_preference,
    completion_states,
)

SYSTEM = [1, 2, 3, 4]
LONG_PROMPTS = [SYSTEM + [5, 6], SYSTEM + [7], SYSTEM + [8, 9, 10]]


def test_sft_packed_in_trees(model):
    completions = [[20, 21, 22, 23], [24], [25, 26]]
    rows = collate_demonstrations(LONG_PROMPTS, completions, 0, layout="rows")
    tree = collate_demonstrations(LONG_PROMPTS, completions, 0, layout="tree")
    assert rows.get("layout") is None and tree["layout"] == "tree"
    assert tree["input_ids"].shape[0] == 1            # all three in one row, positions restart
    assert tree["n_tokens"] == rows["n_tokens"] == 25
    a, b = completion_token_logps(model, rows), completion_token_logps(model, tree)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    torch.testing.assert_close(_grads(model, b), _grads(model, completion_token_logps(model, rows)),
                               rtol=1e-6, atol=1e-6)


def test_online_tree_layout(model):
    groups = [[[20, 21], [20, 22, 23]], [[24]], [[25, 26, 27], [25, 26], [28]]]
    grouped = collate_online(LONG_PROMPTS, groups, 0, layout="grouped")
    tree = collate_online(LONG_PROMPTS, groups, 0, layout="tree")
    assert tree["layout"] == "tree" and torch.equal(tree["completion_mask"],
                                                    grouped["completion_mask"])
    a = group_token_logps(model, grouped, temperature=0.8)
    b = group_token_logps(model, tree, temperature=0.8)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    torch.testing.assert_close(_grads(model, b), _grads(model, group_token_logps(
        model, grouped, temperature=0.8)), rtol=1e-6, atol=1e-6)
    # per-position outputs (a critic's values) come back in sample order for both
    for batch in (grouped, tree):
        positions = batch["position_ids"].double()          # (rows, width): a stand-in output
        states = completion_states(positions, batch)
        mask = batch["completion_mask"]
        expected = [len(p) - 1 + torch.arange(len(c)).double()
                    for p, g in zip(LONG_PROMPTS, groups, strict=True) for c in g]
        for row, e in enumerate(expected):
            assert torch.equal(states[row, :len(e)], e)
        if batch["layout"] == "tree":
            assert (states[~mask] == 0).all()


def test_auto_layouts_pick_trees_when_they_save_work():
    shared = list(range(100, 160))                   # a long system prompt every row shares
    prompts = [shared + [i] for i in range(8)]
    answers = [[200 + i] * (3 + i) for i in range(8)]
    assert collate_preference(prompts, answers, answers[::-1], 0)["layout"] == "tree"
    assert collate_demonstrations(prompts, answers, 0)["layout"] == "tree"
    assert collate_online(prompts, [[a, a[:2]] for a in answers], 0)["layout"] == "tree"
    # an empty prompt (implicit-prompt data) cannot be a tree's root: padded rows instead
    assert collate_preference([[]] + prompts[1:], answers, answers, 0).get("layout") is None


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on CPU needs a C++ compiler (without one: eager)")
def test_compiled_kernels_equal_the_eager_ones(monkeypatch):
    """Above COMPILE_MIN_ELEMENTS the element-wise work runs through torch.compile (one
    pass per block instead of several): the same numbers as eager to fp32 rounding."""
    import alignment.losses.logps as logps

    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(64, 16, generator=g, requires_grad=True)
    weight = torch.randn(300, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 300, (64,), generator=g)
    upstream = torch.randn(64, generator=g)
    results = []
    for minimum in (10**12, 0):                       # eager, then compiled
        monkeypatch.setattr(logps, "COMPILE_MIN_ELEMENTS", minimum)
        out = fused_token_logps(hidden, weight, labels, softcap=4.0, temperature=0.9,
                                chunk_elements=1000)
        results.append((out, *torch.autograd.grad((out * upstream).sum(), [hidden, weight])))
    assert not logps._compiled.get("failed"), "torch.compile did not run here"
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
