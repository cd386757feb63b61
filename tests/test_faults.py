"""Faults of long runs (issue #33): a disk that fills, damaged checkpoints, two runs on one
output folder. (A dying or hung engine: tests/test_kill_resume.py; memory estimates:
tests/test_memory_estimate.py.)"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignment.config import recipe_from_dict
from alignment.disk import DiskFullError, is_disk_full, require_space
from alignment.errors import TrainingError
from alignment.run_lock import RunLock, RunLockedError
from alignment.trainers import checkpoint
from alignment.trainers.dpo import DPOTrainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import kill_resume as kr  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny random policy (1.6M parameters, fp32: a checkpoint is ~23 MB) and data."""
    return kr.setup(tmp_path_factory.mktemp("faults"))


def dpo(out: Path, files: dict, **trainer) -> dict:
    return {"algorithm": "dpo", "output_dir": str(out),
            "model": {"name": files["model"], "dtype": "float32"},
            "data": {"train": files["pairs"], "eval": None},
            "trainer": {"batch_size": 2, "lr": 1e-3, "max_steps": 4, "save_every": 1,
                        "keep_checkpoints": 4, "threads": 1, **trainer},
            "eval": {"before_after": False},
            "logging": {"report_to": [], "progress_bar": False}}


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in kr.read_jsonl(out / "metrics.jsonl")
            if "step_seconds" in r]


# ------------------------------------------------------------------ disk
def test_what_counts_as_a_full_disk(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:   # re-raised by a library without the errno
        try:
            raise OSError(errno.ENOSPC, "write")
        except OSError as inner:
            raise RuntimeError("could not save") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    # safetensors' Rust error text
    assert is_disk_full(Exception('IoError(Os { code: 28, kind: StorageFull, message: "No '
                                  'space left on device" })'))
    # torch's zip writer loses the errno: counted only when the disk really is short
    torch_error = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos "
                               "6272 vs 6160")
    assert is_disk_full(torch_error, tmp_path, need=1 << 60)
    assert not is_disk_full(torch_error, tmp_path, need=0)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(DiskFullError, match=r"checkpoint step-000002 needs about .* but "
                       rf"{tmp_path} has .* free; the last one is intact"):
        require_space(tmp_path, 1 << 60, "checkpoint step-000002", "the last one is intact")


def test_a_torch_file_is_written_whole_or_the_disk_is_named(tmp_path, monkeypatch):
    import torch

    from alignment import disk

    target = tmp_path / "table.pt"
    disk.save_torch({"x": torch.ones(3)}, target, "the cache")
    assert torch.load(target)["x"].sum() == 3

    def full(obj, path):   # torch's writer on a full disk: a partial file, no errno
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
    with pytest.raises(DiskFullError, match="disk full: the cache needs about"):
        disk.save_torch({"x": torch.zeros(3)}, target, "the cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.pt"]   # old file kept


# Runs inside a private mount namespace (`unshare -rm`) on a tmpfs of 40 MB, then 100 MB:
# (1) step 1's checkpoint fits, step 2's does not: refused before writing; (2) the disk
# fills during step 2's write (ALIGNMENT_FAULT=fill_disk): the write fails for real, with
# torch's "unexpected pos"; after the filler is deleted the same command resumes.
SMALL_DISK = r"""
set -u
run() {  # name, extra env, overrides...
    name=$1; shift; fault=$1; shift
    env $fault "$PY" -m alignment train "$RECIPE" output_dir="$MNT/$name" "$@" \
        >/dev/null 2>>"$OUT/$name.err"
    echo $? >> "$OUT/$name.rc"
    "$PY" -c "import json, sys, os
from alignment.trainers.checkpoint import checkpoint_dirs, damage
root = sys.argv[1]
print(json.dumps({'intact': [p.name for p in checkpoint_dirs(root) if damage(p) is None],
                  'all': sorted(os.listdir(os.path.join(root, 'checkpoints')))}))" \
        "$MNT/$name" >> "$OUT/$name.json"
}
if [ "$MOUNT" = 1 ]; then mount -t tmpfs -o size=40m tmpfs "$MNT" || exit 9; fi
run estimate "A=0" trainer.max_steps=3 trainer.keep_checkpoints=1
if [ "$MOUNT" = 1 ]; then rm -rf "$MNT/estimate"; mount -o remount,size=100m "$MNT"; fi
run filled "ALIGNMENT_FAULT=fill_disk:2" trainer.max_steps=3 trainer.keep_checkpoints=1
rm -f "$MNT"/filled/filler-*
run filled "A=0" trainer.max_steps=3 trainer.keep_checkpoints=1
"""


def test_a_full_disk_stops_with_one_line_and_the_last_checkpoint_intact(files, tmp_path):
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(yaml.safe_dump(dpo(tmp_path / "unused", files)))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**kr.ENV, "OUT": str(tmp_path), "MNT": str(mnt), "PY": sys.executable,
           "RECIPE": str(recipe)}
    unshare = shutil.which("unshare")
    mounted = unshare is not None and subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mnt}"],
        capture_output=True).returncode == 0
    # (no private mount here: the filler raises an injected ENOSPC on the real disk, and
    # the estimate case cannot be staged)
    cmd = [unshare, "-rm", "bash", "-c", SMALL_DISK] if mounted else ["bash", "-c", SMALL_DISK]
    done = subprocess.run(cmd, env={**env, "MOUNT": str(int(mounted))}, timeout=600,
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]

    def result(name):
        rcs = [int(x) for x in (tmp_path / f"{name}.rc").read_text().split()]
        states = [json.loads(x) for x in (tmp_path / f"{name}.json").read_text().splitlines()]
        return rcs, states, (tmp_path / f"{name}.err").read_text()

    if mounted:
        rcs, states, err = result("estimate")
        line = err.strip().splitlines()[-1]
        assert rcs == [2], err[-2000:]
        assert line.startswith("error: disk full: checkpoint step-000002 needs about ")
        assert f"but {mnt}/estimate/checkpoints has " in line, line
        assert "the last checkpoint, step-000001, is intact: free space, then run the same " \
               "command to resume from it" in line, line
        assert states == [{"intact": ["step-000001"], "all": ["step-000001"]}]
    rcs, states, err = result("filled")
    assert rcs == [2, 0], err[-3000:]
    first = [x for x in err.splitlines() if x.startswith("error:")]
    assert first and first[0].startswith("error: disk full: checkpoint step-000002 needs "), err
    assert "the last checkpoint, step-000001, is intact" in first[0]
    # nothing half-written was left: step 1 intact, no temporary folder; then resumed
    assert states[0] == {"intact": ["step-000001"], "all": ["step-000001"]}
    assert "resuming from" in err and "step-000001" in err.split("resuming from")[1]
    assert states[1] == {"intact": ["step-000003"], "all": ["step-000003"]}


# ------------------------------------------------------------------ damaged checkpoints
def test_resume_skips_damaged_checkpoints_names_them_and_continues_exactly(files, tmp_path,
                                                                           capsys):
    out = tmp_path / "run"
    DPOTrainer(recipe_from_dict(dpo(out, files))).train()
    straight = losses(out)
    root = out / "checkpoints"
    weights = root / "step-000004" / "model" / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:   # a disk error or a copy cut short
        f.truncate(size // 2)
    (root / "step-000003" / "trainer.pt").unlink()   # a folder copied half-way
    capsys.readouterr()
    DPOTrainer(recipe_from_dict(dpo(out, files, max_steps=5))).train()
    err = capsys.readouterr().err
    assert (f"skipping checkpoint step-000004: model/model.safetensors has {size // 2:,} "
            f"bytes, {size:,} when written (truncated); moved to step-000004.damaged") in err
    assert "skipping checkpoint step-000003: trainer.pt is missing; moved to " \
           "step-000003.damaged" in err
    assert f"resuming from {root / 'step-000002'} (step 2 of 5)" in err
    resumed = losses(out)   # (the log is cut back to the step resumed from)
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5]
    assert resumed[:4] == straight   # steps 3 and 4 done again the same, bitwise
    assert {p.name for p in root.iterdir()} >= {"step-000003.damaged", "step-000004.damaged",
                                                "step-000005"}


def test_a_checkpoint_is_damaged_when_any_byte_or_its_manifest_is(tmp_path):
    folder = tmp_path / "checkpoints" / "step-000001"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "w.bin").write_bytes(b"\x00" * 64)
    (folder / "trainer_state.json").write_text("{}")
    assert checkpoint.damage(folder).startswith("no manifest.json")
    checkpoint.write_manifest(folder)
    assert checkpoint.damage(folder) is None
    (folder / "model" / "w.bin").write_bytes(b"\x00" * 63 + b"\x01")   # same size
    assert checkpoint.damage(folder) == "model/w.bin differs from what was written " \
                                        "(SHA-256 mismatch)"
    assert checkpoint.damage(folder, hashes=False) is None
    with pytest.raises(TrainingError, match=r"no intact checkpoint in .*checkpoints "
                       r"\(step-000001: model/w.bin differs .*\): move the folder away"):
        checkpoint.choose_checkpoint(tmp_path)
    (folder / "manifest.json").write_text("{not json")
    assert checkpoint.damage(folder) == "manifest.json is unreadable"


# ------------------------------------------------------------------ one run per folder
HOLD = "import sys, time; from alignment.run_lock import RunLock; RunLock(sys.argv[1])" \
       ".acquire(); print('held', flush=True); time.sleep(600)"


def test_a_second_run_on_a_folder_stops_naming_the_first(files, tmp_path, monkeypatch):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        recipe = tmp_path / "dpo.yaml"
        recipe.write_text(yaml.safe_dump(dpo(out, files)))
        second = subprocess.run([*kr.CLI, str(recipe)], env=kr.ENV, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: output_dir {out} is in use by another run: pid "
                               f"{holder.pid} on "), line
        assert ", started 20" in line and "Wait for it to finish" in line
        assert not (out / "checkpoints").exists()
        # a file system without flock: the record of a live process decides
        import fcntl

        def no_flock(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

        with monkeypatch.context() as m:
            m.setattr(fcntl, "flock", no_flock)
            with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
                RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock went with it, its record says it did not finish
    lock = RunLock(out)
    note = lock.acquire()
    assert note and f"(pid {holder.pid}, started" in note and "killed or crashed" in note
    lock.release()
    again = RunLock(out)
    assert again.acquire() is None   # released cleanly: nothing to report
    again.release()
