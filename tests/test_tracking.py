"""Experiment tracking (`logging.report_to`): each tracker, offline, gets the metrics and the
resolved recipe as the run's config, and a resumed run continues the same tracker run.
MetricsLogger is driven directly with a small recipe dict; one tiny DPO run checks the
trainer's wiring."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alignment.config import ConfigError, recipe_from_dict
from alignment.trainers.logger import MetricsLogger

RECIPE = {"algorithm": "dpo", "trainer": {"lr": 1e-5, "max_steps": 4},
          "model": {"name": "tiny", "lora": {"r": 0, "target_modules": ["q_proj", "v_proj"]}},
          "data": {"eval": None}}


def run_logger(out: Path, report_to: list[str], *, start: int = 0, steps: int = 4,
               scale: float = 1.0) -> MetricsLogger:
    """Log steps start+1..steps with loss = scale / step, then close as a finished run."""
    logger = MetricsLogger(out, enabled=True, total_steps=steps, start_step=start,
                           report_to=report_to, run_name="unit-run", project="alignment-tests",
                           config=RECIPE, progress_bar=False)
    for step in range(start + 1, steps + 1):
        logger.log(step, {"loss": scale / step, "rewards/accuracy": 0.5})
    logger.close()
    return logger


def assert_curve(points, expected) -> None:
    """(step, value) pairs: the steps exactly, the values to float precision."""
    points = list(points)
    assert [s for s, _ in points] == [s for s, _ in expected]
    assert [v for _, v in points] == pytest.approx([v for _, v in expected])


# ------------------------------------------------------------------ TensorBoard

def tensorboard_run(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_metrics_and_the_recipe(tmp_path):
    run_logger(tmp_path, ["tensorboard"])
    acc = tensorboard_run(tmp_path / "logs" / "unit-run")   # logs/<run_name>
    assert_curve([(e.step, e.value) for e in acc.Scalars("loss")],
                 [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)])
    recipe_text = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "    trainer:\n      lr: 1.0e-05" in recipe_text   # YAML as a Markdown code block
    # hyper-parameters (Accelerate writes them to a sub-run): the recipe flattened with dots
    from tensorboard.plugins.hparams import plugin_data_pb2

    (sub,) = [p for p in (tmp_path / "logs" / "unit-run").iterdir()
              if p.is_dir() and any(p.glob("events.*"))]
    content = tensorboard_run(sub).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["trainer.lr"].number_value == 1e-5
    assert hparams["model.lora.target_modules"].string_value == '["q_proj", "v_proj"]'
    assert hparams["data.eval"].string_value == "null"


def test_tensorboard_resume_purges_the_steps_after_the_checkpoint(tmp_path):
    run_logger(tmp_path, ["tensorboard"])
    run_logger(tmp_path, ["tensorboard"], start=2, scale=10.0)   # resumed from step 2
    acc = tensorboard_run(tmp_path / "logs" / "unit-run")
    assert_curve([(e.step, e.value) for e in acc.Scalars("loss")],
                 [(1, 1.0), (2, 0.5), (3, 10 / 3), (4, 2.5)])


def test_no_tracker_writes_only_the_jsonl(tmp_path):
    logger = run_logger(tmp_path, [])
    assert not logger.trackers and not (tmp_path / "logs").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


# ------------------------------------------------------------------ wandb (offline)

def wandb_records(path: Path) -> list:
    """The records of a `.wandb` file: a 7-byte header, then LevelDB-log framed protobufs
    (32 KiB blocks; a record is one FULL chunk or FIRST, MIDDLE..., LAST)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:   # a block's tail too short for a header: padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return records


def test_wandb_offline_run_gets_metrics_config_and_resumes_by_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)   # default: under output_dir
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):   # not ~/.cache
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    run_logger(tmp_path, ["wandb"], steps=2)
    run_id = json.loads((tmp_path / "tracking.json").read_text())["wandb"]
    run_logger(tmp_path, ["wandb"], start=2, steps=3)   # resumed: the same wandb run
    import wandb

    wandb.teardown()   # wandb-core writes its files after finish() returns: wait for it
    assert json.loads((tmp_path / "tracking.json").read_text())["wandb"] == run_id
    files = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))
    assert len(files) == 2   # (the resumed run's records; `wandb sync` joins them)
    records = [r for f in files for r in wandb_records(f)]
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert {(r.run_id, r.display_name, r.project) for r in runs} == {
        (run_id, "unit-run", "alignment-tests")}
    config = {i.key: json.loads(i.value_json) for r in records
              if r.WhichOneof("record_type") == "config" for i in r.config.update}
    assert config["trainer"] == {"lr": 1e-5, "max_steps": 4}   # nested, as in the recipe
    history = [{"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert_curve([(h["_step"], h["loss"]) for h in history],
                 [(1, 1.0), (2, 0.5), (3, 1 / 3)])


# ------------------------------------------------------------------ mlflow (file store)

def test_mlflow_file_store_gets_params_and_metrics_and_resumes(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    run_logger(out, ["mlflow"], steps=2)
    run_id = json.loads((out / "tracking.json").read_text())["mlflow"]
    run_logger(out, ["mlflow"], start=2, steps=3)   # params are write-once: not re-logged
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.run_name == "unit-run"
    assert client.get_experiment(run.info.experiment_id).name == "alignment-tests"
    assert run.data.params["trainer.lr"] == "1e-05"
    assert run.data.params["model.lora.target_modules"] == '["q_proj", "v_proj"]'
    losses = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    assert_curve(sorted(losses), [(1, 1.0), (2, 0.5), (3, 1 / 3)])
    assert len(client.search_runs([run.info.experiment_id])) == 1


# ------------------------------------------------------------------ trackio (local)

def test_trackio_local_run_gets_metrics_and_config(tmp_path, monkeypatch):
    pytest.importorskip("trackio")
    import trackio.sqlite_storage as storage

    monkeypatch.setattr(storage, "TRACKIO_DIR", tmp_path / "trackio")   # not ~/.cache
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    run_logger(tmp_path, ["trackio"], steps=2)
    run_logger(tmp_path, ["trackio"], start=2, steps=3)   # resumed by name
    config = storage.SQLiteStorage.get_run_config("alignment-tests", "unit-run")
    assert config["trainer"] == {"lr": 1e-5, "max_steps": 4}
    logs = storage.SQLiteStorage.get_logs("alignment-tests", "unit-run")
    assert_curve([(r["step"], r["loss"]) for r in logs],
                 [(1, 1.0), (2, 0.5), (3, 1 / 3)])


# ------------------------------------------------------------------ recipe keys

def test_recipe_keys_and_their_errors(monkeypatch):
    base = {"algorithm": "dpo", "data": {"eval": None}}
    logging = recipe_from_dict(base).logging
    assert (logging.report_to, logging.run_name, logging.project) == (
        ["tensorboard"], None, "alignment")
    monkeypatch.setitem(sys.modules, "wandb", None)   # find_spec: not installed
    cases = [({"report_to": ["wandb"]}, "logging.report_to: 'wandb' is not installed: "
              "pip install wandb"),
             ({"report_to": ["comet"]}, "logging.report_to: item 0: must be one of "
              "'tensorboard', 'wandb', 'trackio', 'mlflow', 'none'"),
             ({"report_to": ["none", "tensorboard"]}, "'none' cannot be combined"),
             ({"tensorboard": False}, "unknown key 'logging.tensorboard' (allowed in "
              "'logging': report_to,")]
    for section, message in cases:
        with pytest.raises(ConfigError) as err:
            recipe_from_dict({**base, "logging": section})
        assert message in str(err.value)
    assert recipe_from_dict(base, ["logging.report_to=[none]"]).logging.report_to == ["none"]


def test_mlflow_skinny_without_a_tracking_uri_is_refused(monkeypatch):
    pytest.importorskip("mlflow")
    import importlib.metadata

    try:
        importlib.metadata.distribution("mlflow")
        pytest.skip("the full mlflow package has a local default store")
    except importlib.metadata.PackageNotFoundError:
        pass
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="set MLFLOW_TRACKING_URI"):
        recipe_from_dict({"algorithm": "dpo", "data": {"eval": None},
                          "logging": {"report_to": ["mlflow"]}})


# ------------------------------------------------------------------ the trainer's wiring

def test_a_tiny_dpo_run_logs_its_resolved_recipe_to_tensorboard(tmp_path, tiny_model_dir,
                                                                 repo_root):
    from alignment.trainers.dpo import DPOTrainer

    pairs = str(repo_root / "data/arithmetic/preference_chat/train.jsonl")
    recipe = recipe_from_dict({
        "algorithm": "dpo", "output_dir": str(tmp_path / "out"),
        "model": {"name": tiny_model_dir, "dtype": "float32"},
        "data": {"train": pairs, "eval": None, "train_limit": 8},
        "trainer": {"batch_size": 4, "max_steps": 2, "save_every": None},
        "eval": {"before_after": False},
        "logging": {"report_to": ["tensorboard"], "run_name": "tiny-dpo",
                    "progress_bar": False}})
    DPOTrainer(recipe).train()
    acc = tensorboard_run(tmp_path / "out" / "logs" / "tiny-dpo")
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]
    text = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "    algorithm: dpo\n" in text and f"name: {tiny_model_dir}" in text
    assert "dpo:" in text and "ppo:" not in text   # recipe_to_dict: this algorithm's only
