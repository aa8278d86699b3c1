#!/usr/bin/env bash
# Train on one GPU host (any number of local GPUs): install JAX with CUDA and simclr_jax into a
# virtual environment, start TensorBoard, and run the trainer. Re-running resumes from the workdir.
#
#   launch/gpu_host.sh --config configs/moco_v2.py:cifar10 --workdir /data/runs/moco_c10 \
#       [--venv .venv] [--dry-run] [-- --config.batch_size=256]
set -euo pipefail

config="" workdir="" venv=".venv" dry=0 extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --config) config=$2; shift 2;;
    --workdir) workdir=$2; shift 2;;
    --venv) venv=$2; shift 2;;
    --dry-run) dry=1; shift;;
    --) shift; extra=("$@"); break;;
    *) echo "unknown option: $1" >&2; sed -n '2,7p' "$0"; exit 2;;
  esac
done
[[ -n $config && -n $workdir ]] || { echo "error: --config and --workdir are required" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)

run() { if [[ $dry == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

run python3 -m venv "$venv"
run "$venv/bin/pip" install -q -U "jax[cuda12]"
run "$venv/bin/pip" install -q -e "$root"
run mkdir -p "$workdir"
if [[ $dry == 1 ]]; then
  echo "$venv/bin/tensorboard --logdir $workdir --port 6006 &"
else
  "$venv/bin/tensorboard" --logdir "$workdir" --port 6006 >/dev/null 2>&1 &
fi
run "$venv/bin/python" -m simclr_jax.main --config "$config" --workdir "$workdir" "${extra[@]}"
