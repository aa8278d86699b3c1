#!/usr/bin/env bash
# Train on a SLURM cluster of GPU nodes: one JAX process per GPU (JAX's SLURM detection gives
# each task the GPU numbered SLURM_LOCALID), all joined by jax.distributed.initialize() from
# the SLURM_* variables. A batch script is generated and submitted with sbatch; SLURM sends
# SIGTERM 120 s before the time limit, every process saves the same step and exits with status 3,
# and the script requeues the job, which resumes from the workdir.
#
#   launch/slurm.sh --nodes 2 --gpus-per-node 8 --config configs/simclr_v1.py:imagenet \
#       --workdir /shared/runs/simclr_r50 [--time 24:00:00] [--partition gpu] [--venv .venv] \
#       [--dry-run] [-- --config.dataset.data_dir=/shared/tfds]
# --dry-run prints the batch script instead of submitting it. The workdir must be on a file
# system every node sees (checkpoints are written collectively).
set -euo pipefail

usage() { sed -n '2,14p' "$0"; exit 2; }
nodes=1 gpus=8 time_limit="24:00:00" partition="" config="" workdir="" venv=".venv" dry=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --nodes) nodes=$2; shift 2;;
    --gpus-per-node) gpus=$2; shift 2;;
    --time) time_limit=$2; shift 2;;
    --partition) partition=$2; shift 2;;
    --config) config=$2; shift 2;;
    --workdir) workdir=$2; shift 2;;
    --venv) venv=$2; shift 2;;
    --dry-run) dry=1; shift;;
    --) shift; extra=("$@"); break;;
    *) echo "unknown option: $1" >&2; usage;;
  esac
done
[[ -n $config && -n $workdir ]] || { echo "error: --config and --workdir are required" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
train=$(printf '%q ' "$root/$venv/bin/python" -m simclr_jax.main --config "$config" \
        --workdir "$workdir" "${extra[@]}")

script=$(cat <<SCRIPT
#!/bin/bash
#SBATCH --job-name=simclr_jax
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$gpus
#SBATCH --gpus-per-node=$gpus
#SBATCH --time=$time_limit
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=$workdir/slurm-%j.out
${partition:+#SBATCH --partition=$partition}
cd $(printf '%q' "$root")
srun --kill-on-bad-exit=1 $train
status=\$?
if [[ \$status == 3 ]]; then  # stopped before the end with a checkpoint: resume later
  scontrol requeue "\$SLURM_JOB_ID"
fi
exit \$status
SCRIPT
)

if [[ $dry == 1 ]]; then
  echo "mkdir -p $workdir"
  echo "$script"
else
  mkdir -p "$workdir"
  sbatch <<< "$script"
fi
