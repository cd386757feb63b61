"""Data as users name it (hub ids from the offline cache, cloned dataset repos, globs,
save_to_disk folders, mappings), TRL's dataset types, tokenisation cached by fingerprint,
and the checks made before any model loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alignment.config import ConfigError, recipe_from_dict
from alignment.data import DataError, load_examples
from alignment.data import prepare as prepare_module
from alignment.data.prepare import TokenizeSettings, tokenize_source
from alignment.data.sources import open_source, parse_source

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = TokenizeSettings(max_length=512, max_prompt_length=256)


def pair(i: int, chat: bool = False) -> dict:
    if chat:
        return {"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
                "chosen": [{"role": "assistant", "content": str(i + 1)}],
                "rejected": [{"role": "assistant", "content": str(i + 2)}]}
    return {"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)}


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def hub_repo(root: Path, *, configs: bool = True) -> Path:
    """A dataset repository as `git clone` of a hub dataset leaves it: README `configs`,
    data/<split>-*.parquet, conversational pairs (TRL's format)."""
    shard = "-00000-of-00001.parquet"
    write_parquet(root / "data" / f"train{shard}", [pair(i, True) for i in range(12)])
    write_parquet(root / "data" / f"test{shard}", [pair(i, True) for i in range(50, 54)])
    write_parquet(root / "extra" / f"train{shard}", [pair(i) for i in range(7)])
    card = ["---", "configs:", "- config_name: default", "  data_files:",
            "  - split: train", "    path: data/train-*",
            "  - split: test", "    path: data/test-*",
            "- config_name: extra", "  data_files:", "  - split: train",
            "    path: extra/train-*",
            "---", "# tiny prefs"]
    if configs:
        (root / "README.md").write_text("\n".join(card) + "\n")
    return root


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An HF datasets cache holding 'tiny-org/tiny_prefs', built here (no network): the repo
    is prepared once, then filed under the hub id where datasets' offline lookup finds it."""
    import datasets

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    repo = hub_repo(tmp_path / "repo")
    datasets.load_dataset(str(repo), cache_dir=str(cache))
    prepared = next((cache / "repo").glob("default/*/*"))
    target = cache / "tiny-org___tiny_prefs" / prepared.relative_to(cache / "repo")
    shutil.copytree(prepared, target)
    for f in target.glob("repo-*.arrow"):
        f.rename(f.with_name(f.name.replace("repo-", "tiny_prefs-")))
    return cache


# ---------------------------------------------------------------- naming a source

@pytest.mark.parametrize("text,expected", [
    ("org/name", ("org/name", None, None)),
    ("org/name:test", ("org/name", None, "test")),
    ("org/name:cfg:train[:10]", ("org/name", "cfg", "train[:10]")),
    ("data/x.jsonl", ("data/x.jsonl", None, None)),
])
def test_shorthand(text, expected):
    s = parse_source(text)
    assert (s.path, s.name, s.split) == expected


def test_hub_id_from_offline_cache(hub_cache):
    train = open_source("tiny-org/tiny_prefs")
    assert len(train.dataset) == 12 and train.label == "tiny-org/tiny_prefs:train"
    assert len(open_source("tiny-org/tiny_prefs", role="eval").dataset) == 4   # -> test
    assert len(open_source("tiny-org/tiny_prefs:test").dataset) == 4
    assert len(open_source({"path": "tiny-org/tiny_prefs", "split": "train[:5]"}).dataset) == 5
    [ex] = load_examples({"path": "tiny-org/tiny_prefs", "split": "test"}, "preference", 1)
    assert ex.completions["chosen"] == [{"role": "assistant", "content": "51"}]
    assert ex.where == "tiny-org/tiny_prefs:test row 0"


def test_uncached_hub_id_offline_is_one_line(hub_cache):
    with pytest.raises(DataError) as info:
        open_source("tiny-org/not_here")
    message = str(info.value)
    assert "dataset 'tiny-org/not_here' is not in the local datasets cache" in message
    assert "load_dataset('tiny-org/not_here')" in message and "\n" not in message


def test_cloned_repo_folder(tmp_path):
    repo = hub_repo(tmp_path / "repo")
    assert len(open_source(repo).dataset) == 12
    assert len(open_source(repo, role="eval").dataset) == 4
    assert len(open_source({"path": str(repo), "name": "extra"}).dataset) == 7
    with pytest.raises(DataError, match="repo: Unknown split \"dev\". Should be one of"):
        open_source({"path": str(repo), "split": "dev"})


def test_folder_of_files_without_card_and_glob(tmp_path):
    repo = hub_repo(tmp_path / "repo", configs=False)   # datasets infers splits from names
    assert len(open_source(repo).dataset) + len(open_source(repo, role="eval").dataset) > 0
    for k in range(3):
        write_parquet(tmp_path / "shards" / f"part-{k}.parquet",
                      [pair(10 * k + i) for i in range(4)])
    shards = open_source(str(tmp_path / "shards" / "*.parquet"))
    assert len(shards.dataset) == 12 and shards.dataset[4]["prompt"] == "What is 10 + 1?"
    with pytest.raises(DataError, match="matches no files"):
        open_source(str(tmp_path / "shards" / "*.jsonl"))


def test_save_to_disk_dataset_dict_picks_split_by_role(tmp_path):
    import datasets

    rows = datasets.Dataset.from_list([pair(i) for i in range(6)])
    datasets.DatasetDict({"train": rows, "validation": rows.select(range(2))}).save_to_disk(
        str(tmp_path / "dd"))
    assert len(open_source(tmp_path / "dd").dataset) == 6
    assert len(open_source(tmp_path / "dd", role="eval").dataset) == 2
    datasets.DatasetDict({"a": rows, "b": rows}).save_to_disk(str(tmp_path / "ab"))
    with pytest.raises(DataError, match="holds the splits a, b; say which one"):
        open_source(tmp_path / "ab")


def test_recipe_takes_mapping_and_refuses_bad_keys(tmp_path):
    repo = hub_repo(tmp_path / "repo")
    recipe = recipe_from_dict({"algorithm": "dpo", "data": {
        "train": {"path": str(repo), "split": "train"}, "eval": f"{repo}"}})
    assert recipe.data.train == {"path": str(repo), "split": "train"}
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'splt' in a data source"):
        recipe_from_dict({"algorithm": "dpo", "data": {"train": {"path": str(repo),
                                                                 "splt": "train"}}})
    with pytest.raises(ConfigError, match="data.train: 'nope.jsonl' does not exist"):
        recipe_from_dict({"algorithm": "dpo", "data": {"train": "nope.jsonl"}})
    # a hub id is accepted at check time (whether it is cached is the preflight's question)
    assert recipe_from_dict({"algorithm": "dpo", "data": {"train": "org/x:train"}}
                            ).data.train == "org/x:train"


# ---------------------------------------------------------------- TRL's dataset types

def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_language_modelling_text_rows(tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "lm.jsonl", [{"text": "The sum of 2 and 2 is 4."}])
    [te] = tokenize_source(tokenizer, data, "sft", SETTINGS)
    ids = tokenizer("The sum of 2 and 2 is 4.")["input_ids"]
    assert te.prompt_ids + te.completion_ids["completion"] == ids + [tokenizer.eos_token_id]
    assert len(te.prompt_ids) == 1   # every token after the first is a label


def test_unpaired_preference_rows_become_pairs(tokenizer, tmp_path):
    rows = [{"prompt": "q1", "completion": "good", "label": True},
            {"prompt": "q1", "completion": "bad", "label": False},
            {"prompt": "q2", "completion": "fine", "label": True},
            {"prompt": "q2", "completion": "worse", "label": False},
            {"prompt": "q2", "completion": "also good", "label": True}]   # no partner
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    out = tokenize_source(tokenizer, data, "preference", SETTINGS)
    assert len(out) == 2
    first = out[0]
    assert tokenizer.decode(first.completion_ids["chosen"]).startswith("good")
    assert tokenizer.decode(first.completion_ids["rejected"]).startswith("bad")
    assert first.where == f"{data} line 1 (paired with {data} line 2)"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "label": "yes"}])
    with pytest.raises(DataError, match="line 1: column 'label' must be true or false"):
        tokenize_source(tokenizer, bad, "preference", SETTINGS)


TOOL_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}:"
    "{{ t.function.parameters | tojson }};{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function.name }}"
    "({{ c.function.arguments }})</call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_tool_calls_pass_through_the_chat_template(tokenizer, tmp_path):
    call = {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    messages = [{"role": "user", "content": "2 + 2?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "name": "add", "content": "4"},
                {"role": "assistant", "content": "It is 4."}]
    add = {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}
    mul = {"type": "function", "function": {"name": "mul", "parameters": {
        "type": "object", "properties": {"x": {"type": "number"}}}}}
    rows = [{"messages": messages, "tools": [add]},          # tools as objects (Arrow
            {"messages": messages, "tools": json.dumps([mul])}]   # structs) or as JSON text
    data = write_jsonl(tmp_path / "tools.jsonl", rows)
    tok = _with_template(tokenizer, TOOL_TEMPLATE)
    first, second = tokenize_source(tok, data, "sft", SETTINGS)
    prompt = tok.decode(first.prompt_ids)
    assert '<call>add({"a": 2, "b": 2})</call>' in prompt and "<|im_start|>tool\n4" in prompt
    assert prompt.startswith('<tools>add:{"type": "object", "properties": {"a": {"type": '
                             '"integer"}, "b": {"type": "integer"}}};</tools>')   # no nulls
    assert tok.decode(second.prompt_ids).startswith('<tools>mul:{"type": "object", '
                                                    '"properties": {"x": {"type": "number"}}};')
    assert tok.decode(first.completion_ids["completion"]).startswith("It is 4.")


def _with_template(tokenizer, template: str):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_prompt_only_rows_need_no_answer_unless_a_reward_reads_it(tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Write a haiku."}])
    [te] = tokenize_source(tokenizer, data, "prompt", SETTINGS, answer_column=None)
    assert tokenizer.decode(te.prompt_ids) == te.prompt_text and te.raw_prompt == "Write a haiku."
    with pytest.raises(DataError, match="missing column 'answer'"):
        tokenize_source(tokenizer, data, "prompt", SETTINGS)


# ---------------------------------------------------------------- cached tokenisation

def test_second_run_tokenises_nothing_and_a_change_retokenises(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "pairs.jsonl", [pair(i, chat=i % 2 == 0) for i in range(40)])
    first = tokenize_source(tokenizer, data, "preference", SETTINGS)
    assert len(first) == 40 and Path(first.cache_file).is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("tokenised again")
    monkeypatch.setattr(prepare_module, "_tokenize_batch", refuse)
    again = tokenize_source(tokenizer, data, "preference", SETTINGS)   # from the cache
    assert again.fingerprint == first.fingerprint and again.lengths == first.lengths
    assert again[3].completion_ids == first[3].completion_ids and again[3].where.endswith("line 4")
    for changed in (dict(settings=TokenizeSettings(max_length=300, max_prompt_length=256)),
                    dict(limit=10)):
        with pytest.raises(AssertionError, match="tokenised again"):
            tokenize_source(tokenizer, data, "preference", **{"settings": SETTINGS, **changed})
    time.sleep(0.01)
    write_jsonl(data, [pair(i) for i in range(41)])   # the file changed
    with pytest.raises(AssertionError, match="tokenised again"):
        tokenize_source(tokenizer, data, "preference", SETTINGS)


def test_rows_stay_in_arrow(tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{**pair(i), "answer": i + 1} for i in range(9)])
    rows = tokenize_source(tokenizer, data, "preference", SETTINGS)
    assert type(rows.table).__name__ == "Dataset" and rows.table.cache_files
    assert rows.lengths == [len(t.prompt_ids) + max(map(len, t.completion_ids.values()))
                            for t in rows]
    assert rows[8].extra == {"answer": 9} and rows[-1].extra == {"answer": 9}


# ---------------------------------------------------------------- before any model loads

def _recipe(tmp_path, **data):
    return recipe_from_dict({"algorithm": "dpo", "output_dir": str(tmp_path / "out"),
                             "model": {"name": "smollm2-135m"},
                             "data": {"eval": None, **data}, "eval": {"before_after": False}})


def test_preflight_columns_and_disk(tmp_path, monkeypatch):
    from alignment import preflight

    prompts = str(ROOT / "data/arithmetic/add2/test.jsonl")
    with pytest.raises(DataError, match="data.train: .*missing columns 'chosen', 'rejected'"):
        preflight.preflight(_recipe(tmp_path, train=prompts))
    grpo = recipe_from_dict({"algorithm": "grpo", "output_dir": str(tmp_path / "g"),
                             "data": {"train": str(write_jsonl(tmp_path / "p.jsonl",
                                                               [{"prompt": "q"}])),
                                      "eval": None}, "eval": {"before_after": False}})
    with pytest.raises(DataError, match="missing column 'answer', which the reward "
                                        "'exact_answer' reads"):
        preflight.preflight(grpo)
    recipe = _recipe(tmp_path, train=str(ROOT / "data/arithmetic/preference/train.jsonl"))
    monkeypatch.setattr(preflight, "parameter_count", lambda name: 135_000_000)
    monkeypatch.setattr(preflight.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**10, 10**10 - 10**9, 10**9))
    with pytest.raises(ConfigError, match=r"one checkpoint needs about 2\.2 GB \(135M "
                                          r"parameters x 16 bytes.*has 1\.0 GB free"):
        preflight.preflight(recipe)


def test_parameter_count_reads_safetensors_headers(tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    from alignment.preflight import parameter_count

    weights = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert parameter_count(tiny_model_dir) == sum(t.numel() for t in weights.values())
    assert all(isinstance(t, torch.Tensor) for t in weights.values())


def _train(recipe: Path, *overrides: str, env_extra: dict | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "alignment", "train", str(recipe), *overrides],
                         env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    return out, time.perf_counter() - start


def test_cli_refuses_in_seconds(tmp_path):
    """An output_dir that is a file and an uncached hub id, each: exit 2 and one line, long
    before a model would have loaded."""
    recipe = ROOT / "recipes" / "dpo.yaml"
    (tmp_path / "afile").write_text("x")
    out, seconds = _train(recipe, f"output_dir={tmp_path / 'afile'}")
    assert out.returncode == 2 and seconds < 30, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].endswith(f"'{tmp_path / 'afile'}' is a file, "
                                                        "not a folder")
    out, seconds = _train(recipe, "data.train=tiny-org/not_cached", f"output_dir={tmp_path}/o",
                          env_extra={"HF_DATASETS_CACHE": str(tmp_path / "empty")})
    assert out.returncode == 2 and seconds < 30, out.stderr[-2000:]
    assert "dataset 'tiny-org/not_cached' is not in the local datasets cache" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "o").exists()


def test_dpo_trains_on_a_cloned_dataset_repo(tmp_path, tiny_model_dir):
    repo = hub_repo(tmp_path / "repo")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "algorithm": "dpo", "output_dir": str(tmp_path / "out"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": str(repo), "eval": str(repo)},
        "trainer": {"batch_size": 4, "max_steps": 2, "save_every": None, "lr": 1e-3},
        "eval": {"before_after": False}, "logging": {"report_to": []}}))
    out, _ = _train(recipe)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(1/epoch, 12 examples" not in out.stderr   # 12 pairs, batch 4: 3 per epoch
    assert "training dpo for 2 steps (3/epoch, 12 examples" in out.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").open()]
    assert any("eval/loss" in r for r in rows)   # the test split was the eval data
