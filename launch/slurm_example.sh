#!/usr/bin/env bash
# An example SLURM job: 2 nodes x 8 GPUs, one `alignment train` per node.
#   sbatch launch/slurm_example.sh recipes/dpo.yaml [key=value ...]
# Each node's launcher starts its 8 processes; they meet at the first node's address.
#SBATCH --job-name=alignment
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts the GPU processes
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --output=slurm-%j.out
set -euo pipefail

RECIPE=${1:?usage: sbatch launch/slurm_example.sh RECIPE [key=value ...]}
shift
CONFIG=${LAUNCH_CONFIG:-launch/multi_node.yaml}   # or a DeepSpeed config with num_machines set
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}

# srun runs the block once per node; SLURM_NODEID is that node's rank (0 = head).
srun --kill-on-bad-exit=1 bash -c "
  .venv/bin/alignment train '$RECIPE' $* \
    launch.config_file=$CONFIG \
    launch.num_machines=$SLURM_NNODES \
    launch.num_processes=$(( SLURM_NNODES * GPUS_PER_NODE )) \
    launch.machine_rank=\$SLURM_NODEID \
    launch.main_process_ip=$HEAD \
    launch.main_process_port=29500
"
