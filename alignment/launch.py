"""Start the processes of a multi-process run: `alignment train` hands itself to a launcher.

    alignment train recipes/dpo.yaml launch.num_processes=2
        -> python -m torch.distributed.run --nproc_per_node 2 ... -m alignment.cli train ...

The recipe's `launch:` section (or the Accelerate config file it names) says how many
processes and machines. With one process the run stays in this process (unless the config
is DeepSpeed's, which needs `accelerate launch` even for one). With more:

- on CPU, for plain data parallelism (`NO` / `MULTI_CPU` / `MULTI_GPU` configs), we start
  torchrun ourselves with `ACCELERATE_USE_CPU=1`: `accelerate launch` on a CPU fans out only
  through mpirun and otherwise silently runs ONE process (accelerate 1.15);
- everywhere else (GPUs, DeepSpeed, FSDP) `accelerate launch --config_file ...` does it, since
  it is what turns those config files into the environment `Accelerator()` reads.

Either way every child runs `python -m alignment.cli train RECIPE OVERRIDES` with
`ALIGNMENT_LAUNCHED=1`, the launcher's exit status is ours, and a rank that fails takes the
others down with it (torchrun's agent stops the whole group when one worker exits non-zero).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alignment.config import ConfigError, Recipe
from alignment.errors import not_utf8

CPU_DATA_PARALLEL = ("NO", "MULTI_CPU", "MULTI_GPU")
SUPPORTED = (*CPU_DATA_PARALLEL, "DEEPSPEED", "FSDP")
LAUNCHED = "ALIGNMENT_LAUNCHED"


class LaunchError(RuntimeError):
    """The processes asked for cannot be (or were not) started as asked."""


@dataclass
class LaunchPlan:
    num_processes: int
    num_machines: int
    machine_rank: int
    main_process_ip: str
    main_process_port: int
    distributed_type: str      # from the Accelerate config file ("NO" without one)
    use_cpu: bool
    config_file: str | None

    @property
    def per_machine(self) -> int:
        return self.num_processes // self.num_machines

    @property
    def needs_launcher(self) -> bool:
        """Several processes, or DeepSpeed (even on one: its settings reach `Accelerator()`
        only through the environment `accelerate launch` prepares)."""
        return (self.num_processes > 1 or self.num_machines > 1
                or self.distributed_type == "DEEPSPEED")


def read_accelerate_config(path: str | None) -> dict:
    if path is None:
        return {}
    import yaml

    if os.path.isdir(path):
        raise ConfigError([f"launch.config_file: {path} is a folder, not an Accelerate "
                           "config file (e.g. launch/multi_gpu.yaml)"])
    data = Path(path).read_bytes()
    try:
        loaded = yaml.safe_load(data.decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError([f"launch.config_file: {path} is {not_utf8(data, exc)}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"launch.config_file: {path} is not valid YAML: {exc}"]) from None
    if not isinstance(loaded, dict):
        raise ConfigError([f"launch.config_file: {path} is not an Accelerate config mapping"])
    return loaded


def plan(recipe: Recipe) -> LaunchPlan:
    """The recipe's `launch:` values, falling back to the config file's, then to defaults."""
    launch = recipe.launch
    file_cfg = read_accelerate_config(launch.config_file)

    def pick(key: str, default):
        value = getattr(launch, key)
        return value if value is not None else file_cfg.get(key, default)

    result = LaunchPlan(
        num_processes=int(pick("num_processes", 1)), num_machines=int(pick("num_machines", 1)),
        machine_rank=int(pick("machine_rank", 0)),
        main_process_ip=str(pick("main_process_ip", None) or "127.0.0.1"),
        main_process_port=int(pick("main_process_port", None) or 29500),
        distributed_type=str(file_cfg.get("distributed_type", "NO")).upper(),
        use_cpu=bool(file_cfg.get("use_cpu", False)) or not _has_gpu(),
        config_file=launch.config_file)
    problems = []
    if result.distributed_type not in SUPPORTED:
        problems.append(f"launch.config_file: distributed_type {result.distributed_type} is "
                        f"not supported (use one of {', '.join(SUPPORTED)}; for sharding, "
                        "launch/fsdp.yaml or launch/deepspeed_zero3.yaml)")
    fsdp_version = (file_cfg.get("fsdp_config") or {}).get("fsdp_version", 1)
    if result.distributed_type == "FSDP" and str(fsdp_version) != "2":
        problems.append(f"launch.config_file: fsdp_version {fsdp_version} is not supported: "
                        "set fsdp_config.fsdp_version: 2 (FSDP2; see launch/fsdp.yaml)")
    if result.num_processes % result.num_machines:
        problems.append(f"launch.num_processes={result.num_processes} is not a multiple of "
                        f"launch.num_machines={result.num_machines} (it counts processes "
                        "over all machines)")
    if not 0 <= result.machine_rank < result.num_machines:
        problems.append(f"launch.machine_rank={result.machine_rank} must be in 0.."
                        f"{result.num_machines - 1}")
    if problems:
        raise ConfigError(problems, launch.config_file)
    return result


def _zero_stage(file_cfg: dict) -> int | None:
    """The ZeRO stage an Accelerate config asks for (inline or in its DeepSpeed JSON)."""
    ds = file_cfg.get("deepspeed_config") or {}
    if ds.get("zero_stage") is not None:
        return int(ds["zero_stage"])
    path = ds.get("deepspeed_config_file")
    if path and os.path.isfile(path):
        import json

        with open(path, encoding="utf-8") as f:
            stage = json.load(f).get("zero_optimization", {}).get("stage")
        return int(stage) if stage is not None else None
    return None


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def inside_launched_process() -> bool:
    """True in a child of a launcher (ours, torchrun, accelerate, deepspeed, mpirun)."""
    return bool(os.environ.get(LAUNCHED) or os.environ.get("WORLD_SIZE")
                or os.environ.get("OMPI_COMM_WORLD_SIZE"))


def check_single_process_start() -> None:
    """`accelerate launch --num_processes N` on CPU starts one process and says nothing.
    It does export MASTER_ADDR (only when N > 1 or several machines were asked for), so a
    lone process that has it, without WORLD_SIZE, was meant to have company."""
    if (os.environ.get("ACCELERATE_DYNAMO_BACKEND") and os.environ.get("MASTER_ADDR")
            and not inside_launched_process()):
        raise LaunchError(
            "accelerate launch was asked for several processes but started ONE (on a CPU "
            "accelerate fans out only through mpirun). Let alignment start them: "
            "`alignment train RECIPE launch.num_processes=N` or "
            "`launch.config_file=launch/multi_cpu.yaml` (torchrun underneath)")


def command(recipe_path: str, overrides: list[str], p: LaunchPlan) -> tuple[list[str], dict]:
    """The launcher command line and environment for this machine's processes."""
    env = dict(os.environ, **{LAUNCHED: "1"})
    child = ["-m", "alignment.cli", "train", recipe_path, *overrides]
    if p.use_cpu and p.distributed_type in CPU_DATA_PARALLEL:
        env["ACCELERATE_USE_CPU"] = "1"
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        env["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // p.per_machine))
        cmd = [sys.executable, "-m", "torch.distributed.run",
               f"--nproc_per_node={p.per_machine}", f"--nnodes={p.num_machines}",
               f"--node_rank={p.machine_rank}", f"--master_addr={p.main_process_ip}",
               f"--master_port={p.main_process_port}", "--max_restarts=0", *child]
        return cmd, env
    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable),
                                                            "accelerate")
    cmd = [accelerate, "launch"]
    if p.config_file:
        cmd += ["--config_file", p.config_file]
    elif not p.use_cpu:
        cmd += ["--multi_gpu"]
    cmd += ["--num_processes", str(p.num_processes), "--num_machines", str(p.num_machines),
            "--machine_rank", str(p.machine_rank), "--main_process_ip", p.main_process_ip,
            "--main_process_port", str(p.main_process_port), *child]
    return cmd, env


def launch(recipe_path: str, overrides: list[str], p: LaunchPlan) -> int:
    cmd, env = command(recipe_path, overrides, p)
    print(f"launch: {p.per_machine} process(es) on machine {p.machine_rank} of "
          f"{p.num_machines} ({p.distributed_type}{', CPU' if p.use_cpu else ''}): "
          f"{' '.join(cmd[:8])} ...", file=sys.stderr, flush=True)
    code = subprocess.call(cmd, env=env)
    if code:
        print(f"launch: the run failed (exit {code}); the failing rank's error is above",
              file=sys.stderr, flush=True)
    return code
