"""Multi-turn episodes: replies rendered through the chat template and appended as ids,
environment tokens masked out of every loss (float64, exactly), GAE across the replies,
the built-in environments, and online trainers playing episodes end to end."""

from __future__ import annotations

import json

import pytest
import torch
from test_grpo_trainer import make_recipe
from transformers import AutoModelForCausalLM

from alignment.config import ConfigError
from alignment.environments import Environment, Step, environment_factory
from alignment.environments.python_tool import PythonTool
from alignment.environments.self_correction import SelfCorrection
from alignment.losses.gae import gae
from alignment.losses.grpo import grpo_loss
from alignment.models import load_tokenizer, stop_token_ids
from alignment.rollout import SamplingParams, make_engine
from alignment.rollout.episodes import EpisodeLimits, ReplyRenderer, play_episodes
from alignment.trainers.grpo import GRPOTrainer
from alignment.trainers.multi_turn import first_turn_mask
from alignment.trainers.sequences import collate_online, group_token_logps


class Again(Environment):
    """Replies 'again <k>' as a tool until the model has written `turns` turns."""

    def __init__(self, turns: int = 3):
        self.turns = turns

    def reset(self, row, verify):
        self.seen = 0

    def step(self, text):
        self.seen += 1
        return Step(observation=f"again {self.seen}", role="tool", done=self.seen >= self.turns,
                    reward=0.25, metrics={"steps": 1.0})


class Flaky(Again):
    """Again, but its second step raises on prompts with an even answer (a user's bug)."""

    def reset(self, row, verify):
        super().reset(row, verify)
        self.even = int(row["answer"]) % 2 == 0

    def step(self, text):
        if self.seen == 1 and self.even:
            raise RuntimeError("flaky environment")
        return super().step(text)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                             add_generation_prompt=True, tokenize=False)
               for q in ("What is 2 + 3?", "Compute 10 - 4.")]
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    return model, tokenizer, prompt_ids


def play(tiny, envs, limits, max_new_tokens=5, n=2):
    model, tokenizer, prompt_ids = tiny
    engine = make_engine("hf", model=model, tokenizer=tokenizer)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens)
    first = engine.generate(prompt_ids, n=n, sampling=sampling, seeds=[11, 12])
    renderer = ReplyRenderer(tokenizer, stop_token_ids(tokenizer, model))
    return play_episodes(engine, first, envs, rows=[{}, {}], verify=lambda i, t: 0.0,
                         renderer=renderer, sampling=sampling, limits=limits, seeds=[11, 12])


def test_reply_is_the_templates_continuation(tokenizer):
    """After a turn that ended on its EOS the reply starts where the template goes on;
    after a cut turn the template's end-of-turn comes first (the model did not write it).
    Token for token, an episode is the chat template's rendering of the conversation."""
    renderer = ReplyRenderer(tokenizer, stop_token_ids(tokenizer))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(renderer.tokens("tool", "42", eos)) == \
        "\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(renderer.tokens("user", "check", 17)) == \
        "<|im_end|>\n<|im_start|>user\ncheck<|im_end|>\n<|im_start|>assistant\n"
    talk = [{"role": "user", "content": "Q?"}]
    prompt = tokenizer.apply_chat_template(talk, add_generation_prompt=True, tokenize=False)
    turn1 = tokenizer("```python\nprint(6*7)\n```", add_special_tokens=False).input_ids + [eos]
    turn2 = tokenizer("It is 42.", add_special_tokens=False).input_ids + [eos]
    episode = turn1 + renderer.tokens("tool", "42", eos) + turn2
    whole = talk + [{"role": "assistant", "content": "```python\nprint(6*7)\n```"},
                    {"role": "tool", "content": "42"},
                    {"role": "assistant", "content": "It is 42."}]
    rendered = tokenizer.apply_chat_template(whole, tokenize=False)
    assert tokenizer(prompt, add_special_tokens=False).input_ids + episode == \
        tokenizer(rendered.removesuffix("\n"), add_special_tokens=False).input_ids


def test_episodes_batch_turns_mask_replies_and_keep_the_engines_logprobs(tiny):
    model, tokenizer, prompt_ids = tiny
    rollouts, info = play(tiny, [Again(3) for _ in range(4)], EpisodeLimits(4, 80))
    assert info.turns == [3, 3, 3, 3] and info.env_rewards == [0.75] * 4
    assert info.metrics == [{"steps": 3.0}] * 4
    for i, ids in enumerate(rollouts.completion_ids):
        forced = rollouts.forced[i]
        assert len(ids) == len(forced) == len(rollouts.logprobs[i]) <= 80
        assert sum(forced) == info.reply_tokens[i] > 0
        replies = tokenizer.decode([t for t, f in zip(ids, forced, strict=True) if f])
        assert "again 1" in replies and "again 2" in replies and "again 3" not in replies
        assert rollouts.texts[i] in tokenizer.decode(ids)   # the last turn: what is scored
    # the engine's sampling log-probs of every model token = the trainer's, in one forward
    # over the whole episode (environment tokens as context only)
    groups = [[rollouts.completion_ids[2 * p], rollouts.completion_ids[2 * p + 1]]
              for p in range(2)]
    batch = collate_online(prompt_ids, groups, tokenizer.pad_token_id, layout="separate")
    with torch.no_grad():
        trainer = group_token_logps(model, batch)
    for i in range(4):
        model_tokens = torch.tensor([not f for f in rollouts.forced[i]])
        sampled = torch.tensor(rollouts.logprobs[i], dtype=torch.float64)[model_tokens]
        mine = trainer[i, :len(model_tokens)][model_tokens]
        assert torch.allclose(sampled, mine, atol=1e-6)


def test_token_budget_ends_episodes_and_no_reply_trails(tiny):
    rollouts, info = play(tiny, [Again(10) for _ in range(4)], EpisodeLimits(10, 40))
    for i, ids in enumerate(rollouts.completion_ids):
        assert len(ids) <= 40 and not rollouts.forced[i][-1]   # ends on a model token
        assert rollouts.finish_reasons[i] == "length" and info.turns[i] < 10


def test_environment_tokens_carry_no_gradient_float64(tiny, tmp_path, prompts_file,
                                                      tiny_model_dir):
    """The trainer's own samples (make_sample -> collate): d loss / d log π_t is non-zero
    on exactly the model's tokens; GAE gives reply tokens no advantage or return."""
    rollouts, info = play(tiny, [Again(3) for _ in range(4)], EpisodeLimits(4, 80))
    trainer = GRPOTrainer(make_recipe(tmp_path, tiny_model_dir, prompts_file))
    trainer.pad_id = tiny[1].pad_token_id
    samples = [trainer.make_sample(rollouts, i, 1.0, False, advantage=[1.0, -1.0][i % 2])
               for i in range(4)]
    batch = trainer.collate(samples)
    logps = group_token_logps(trainer.policy, batch)
    logps.retain_grad()
    mask = batch["loss_mask"]
    loss, _ = grpo_loss(logps, logps.detach(), logps.detach(), batch["advantages"], mask)
    loss.backward()
    assert torch.equal(logps.grad != 0, mask)
    width = mask.shape[1]
    expected = torch.zeros_like(mask)
    for i in range(4):
        expected[i, :len(rollouts.forced[i])] = ~torch.tensor(rollouts.forced[i])
    assert torch.equal(mask, expected)
    # SCoRe stage I's KL (environment.first_turn_kl) reaches the first turn's tokens only
    first = torch.zeros_like(mask)
    for i in range(4):
        upto = rollouts.forced[i].index(True) if True in rollouts.forced[i] else width
        first[i, :upto] = True
    assert torch.equal(first_turn_mask(mask), first) and (mask & ~first).any()
    leaf = logps.detach().clone().requires_grad_()
    loss, _ = grpo_loss(leaf, leaf.detach(), leaf.detach() - 0.1, torch.zeros(4), mask,
                        beta=0.5 * first_turn_mask(mask))
    loss.backward()
    assert torch.equal(leaf.grad != 0, first)
    values = torch.rand(4, width, dtype=torch.float64)
    rewards = torch.zeros(4, width, dtype=torch.float64)
    advantages, returns = gae(rewards, values, mask, 1.0, 0.95)
    assert torch.equal(advantages != 0, mask & (advantages != 0))
    assert not returns[~mask].any()


def test_gae_skips_the_replies_between_turns():
    """With holes in the mask GAE equals GAE over the model's tokens alone, moved back."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    rewards, values = torch.randn(2, 7), torch.randn(2, 7)
    adv, ret = gae(rewards, values, mask, 0.9, 0.8)
    for row in range(2):
        keep = mask[row]
        a, r = gae(rewards[row, keep], values[row, keep], torch.ones(int(keep.sum()),
                                                                     dtype=torch.bool), 0.9, 0.8)
        assert torch.allclose(adv[row, keep], a) and torch.allclose(ret[row, keep], r)
        assert not adv[row, ~keep].any() and not ret[row, ~keep].any()


# ------------------------------------------------------------------ the built-ins
def test_python_tool_runs_code_and_ends_hostile_calls():
    tool = PythonTool(timeout_s=2.0, max_output_chars=40, max_output_bytes=2000)
    tool.reset({}, lambda text: 0.0)
    ok = tool.step("Let me compute.\n```python\nprint(347 * 58)\n```")
    assert ok.observation == "20126" and ok.role == "tool" and not ok.done and not ok.abort
    assert tool.step("The answer is 20126.").done               # no block: the answer
    failed = tool.step("```python\nprint(1/0)\n```")
    assert "ZeroDivisionError" in failed.observation and failed.metrics["tool_errors"] == 1
    long = tool.step("```python\nprint('x' * 500)\n```")
    assert long.observation.endswith("[output truncated]") and not long.abort
    for code, reason in [("while True: pass", "ran past its 2 s"),
                         ("print('y' * 100000)", "printed more than 2000 bytes"),
                         ("import socket\nsocket.socket()", "reached outside the sandbox")]:
        step = tool.step(f"```python\n{code}\n```")
        assert step.done and reason in step.abort, (code, step)


def test_self_correction_pays_for_fixing_and_charges_for_breaking():
    verify = lambda text: float(text.strip().endswith("5"))  # noqa: E731
    env = SelfCorrection(alpha=0.5, first_attempt_weight=0.25)
    env.reset({"answer": "5"}, verify)
    first = env.step("It is 4")
    assert not first.done and first.observation and first.reward == 0.0
    assert first.metrics == {"accuracy_t1": 0.0}
    second = env.step("Correction: it is 5")
    assert second.done and second.reward == 0.5
    assert second.metrics == {"accuracy_t2": 1.0, "wrong_to_right": 1.0, "right_to_wrong": 0.0}
    env.reset({"answer": "5"}, verify)   # right, then broken: w·1 now, −α·1 after
    assert env.step("5").reward == 0.25 and env.step("no, 4").reward == -0.5


def test_environment_names_and_options_are_checked(tmp_path, tiny_model_dir, prompts_file):
    with pytest.raises(ValueError, match="did you mean 'python_tool'"):
        environment_factory("python_tol", {})
    with pytest.raises(ValueError, match="unknown option 'timeout'.*did you mean 'timeout_s'"):
        environment_factory("python_tool", {"timeout": 3})
    with pytest.raises(ValueError, match="alpha and first_attempt_weight must be >= 0"):
        environment_factory("self_correction", {"alpha": -1})
    with pytest.raises(ConfigError, match="max_episode_tokens"):
        make_recipe(tmp_path, tiny_model_dir, prompts_file,
                    environment={"name": "self_correction", "max_episode_tokens": 3})
    with pytest.raises(ConfigError, match="section 'environment' applies"):
        from alignment.config import recipe_from_dict

        recipe_from_dict({"algorithm": "dpo", "environment": {"name": "python_tool"}})
    with pytest.raises(ConfigError, match="first_turn_kl applies to grpo"):
        recipe_from_dict({"algorithm": "ppo", "data": {"train": prompts_file},
                          "environment": {"name": "self_correction", "first_turn_kl": 1.0}})
    with pytest.raises(ConfigError, match="first_turn_kl needs an environment"):
        make_recipe(tmp_path, tiny_model_dir, prompts_file, environment={"first_turn_kl": 1.0})


# ------------------------------------------------------------------ trainers
def test_grpo_trains_on_episodes_and_goes_on_past_a_failing_environment(
        tmp_path, tiny_model_dir, prompts_file, capsys):
    recipe = make_recipe(tmp_path, tiny_model_dir, prompts_file,
                         environment={"name": "test_episodes:Flaky", "options": {"turns": 2},
                                      "max_turns": 3, "max_episode_tokens": 40,
                                      "first_turn_kl": 0.5},
                         trainer={"max_steps": 2, "eval_every": 2})
    trainer = GRPOTrainer(recipe)
    assert trainer.needs_reference()   # first_turn_kl alone asks for π_ref
    trainer.train()
    err = capsys.readouterr().err
    assert "episode ended with reward 0 on step 1" in err
    assert "Flaky.step raised RuntimeError: flaky environment" in err
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2 and all(r["episode/turns"] == 2.0 for r in steps)
    aborted = sum(r["episode/aborted"] for r in steps) / 2
    assert 0 < aborted < 1   # the even answers' episodes: reward 0, the others 0.5 from steps
    for r in steps:
        assert r["rewards/environment"] == pytest.approx(0.5 * (1 - r["episode/aborted"]))
        assert r["time/episodes"] > 0 and r["rollout/logprob_gap_max"] < 1e-6
    assert all("kl" in r for r in steps)
    sample = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert "again 1" in sample["completion"]
    assert "eval/accuracy" in rows[-1]   # greedy episodes through the engine


@pytest.mark.parametrize("algorithm", ["ppo", "dpo"])
def test_actor_critic_and_online_pairs_train_on_episodes(tmp_path, tiny_model_dir, prompts_file,
                                                         algorithm):
    """PPO (critic, GAE across the reply) on SCoRe's two attempts; online DPO on pairs of
    episodes: the environment's turns reach every online trainer through the same loop."""
    from test_actor_critic import ac_dict
    from test_pair_trainers import online_recipe

    from alignment.config import recipe_from_dict
    from alignment.trainers import run_recipe

    env = {"name": "self_correction", "max_turns": 2, "max_episode_tokens": 48}
    if algorithm == "ppo":
        recipe = recipe_from_dict(ac_dict("ppo", tmp_path, tiny_model_dir, prompts_file,
                                          rewards=[{"name": "exact_answer"}], environment=env,
                                          trainer={"max_steps": 2, "eval_every": None}))
    else:
        recipe = online_recipe(tmp_path, tiny_model_dir, prompts_file, environment={
            **env, "name": "test_episodes:Again", "options": {"turns": 2}})
    run_recipe(recipe)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert steps[0]["episode/turns"] == 2.0 and steps[0]["rollout/logprob_gap_max"] < 1e-4
    if algorithm == "ppo":
        assert "episode/accuracy_t1" in steps[0] and "episode/accuracy_t2" in steps[0]
        assert "critic/explained_variance" in steps[0]
    else:
        assert steps[0]["pairs"] >= 1


def test_eval_plays_greedy_episodes(tiny_model_dir, prompts_file):
    from alignment.evaluation import EvalSettings, evaluate, format_table

    result = evaluate(tiny_model_dir, prompts_file, EvalSettings(
        limit=3, max_new_tokens=4, environment="test_episodes:Again", environment_options={
            "turns": 2}, max_turns=3, max_episode_tokens=40))
    assert result["n"] == 3 and result["episodes"]["turns"] == 2.0
    assert result["episodes"]["steps"] == 2.0 and result["episodes"]["aborted"] == 0.0
    assert "again 1" in result["samples"][0]["transcript"]
    assert "episodes: environment test_episodes:Again" in format_table(result)


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first factor
        b: the second factor
    """
    return a * b


def test_function_tools_call_typed_functions_by_name():
    from alignment.environments.function_tools import FunctionTools

    env = environment_factory("function_tools", {"tools": ["test_episodes:multiply"]})()
    step = env.step('<tool_call>{"name": "multiply", "arguments": {"a": 347, "b": 58}}'
                    '</tool_call>')
    assert (step.observation, step.role, step.done) == ("20126", "tool", False)
    bad = env.step('<tool_call>{"name": "divide", "arguments": {}}</tool_call>'
                   '<tool_call>{"name": "multiply", "arguments": {"a": 1}}</tool_call>'
                   '<tool_call>{"name": multiply}</tool_call>')
    assert bad.observation.splitlines() == [
        "error: no tool named 'divide' (tools: multiply)",
        "error: missing a required argument: 'b'",
        "error: the tool call is not valid JSON (Expecting value)"]
    assert bad.metrics == {"tool_calls": 3.0, "tool_errors": 3.0}
    assert env.step("It is 20126.").done
    with pytest.raises(ValueError, match="cannot import module"):
        FunctionTools(tools=["no_such_module:f"])


def test_environment_tools_are_rendered_into_the_prompts(tmp_path, tiny_model_dir,
                                                         prompts_file):
    """An environment's typed functions reach the chat template of every training prompt
    (here a template that lists them), as a row's own `tools` column would."""
    recipe = make_recipe(tmp_path, tiny_model_dir, prompts_file, environment={
        "name": "function_tools", "options": {"tools": ["test_episodes:multiply"]}})
    trainer = GRPOTrainer(recipe)
    schemas = json.loads(trainer.prompt_tools())
    assert schemas[0]["function"]["name"] == "multiply"
    assert schemas[0]["function"]["parameters"]["required"] == ["a", "b"]
    trainer.tokenizer.chat_template = (
        "{% if tools %}TOOLS {% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rows = trainer.load_prompts(prompts_file, 2, "train")
    assert rows[0].text.startswith("TOOLS multiply ")


class NoStep(Environment):
    """Forgot to implement step."""


def test_an_environment_without_step_is_refused_when_checked():
    with pytest.raises(ValueError, match="environment 'test_episodes:NoStep'.*abstract"):
        environment_factory("test_episodes:NoStep", {})
