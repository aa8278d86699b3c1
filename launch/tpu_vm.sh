#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it, install simclr_jax on every worker, run the same
# command on all workers (main.py joins the slice through JAX's Cloud TPU detection: no address
# or process id to pass), start TensorBoard on worker 0, and delete the slice when asked.
# `train` exits with status 3 when the slice was preempted after a checkpoint: run it again.
#
#   launch/tpu_vm.sh create  --name ssl-v4-32 --zone us-central2-b --type v4-32
#   launch/tpu_vm.sh install --name ssl-v4-32 --zone us-central2-b
#   launch/tpu_vm.sh train   --name ssl-v4-32 --zone us-central2-b \
#       --config configs/simclr_v1.py:imagenet --workdir gs://BUCKET/simclr_r50 \
#       -- --config.dataset.data_dir=gs://BUCKET/tfds
#   launch/tpu_vm.sh tensorboard --name ssl-v4-32 --zone us-central2-b --workdir gs://BUCKET/simclr_r50
#   launch/tpu_vm.sh delete  --name ssl-v4-32 --zone us-central2-b
# Add --dry-run to any of them to print the gcloud commands instead of running them.
set -euo pipefail

usage() { sed -n '2,16p' "$0"; exit 2; }
[[ $# -ge 1 ]] || usage
action=$1; shift
name="" zone="" type="v4-8" version="tpu-ubuntu2204-base" config="" workdir="" dry=0
root=$(cd "$(dirname "$0")/.." && pwd)
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) name=$2; shift 2;;
    --zone) zone=$2; shift 2;;
    --type) type=$2; shift 2;;
    --version) version=$2; shift 2;;
    --config) config=$2; shift 2;;
    --workdir) workdir=$2; shift 2;;
    --dry-run) dry=1; shift;;
    --) shift; extra=("$@"); break;;
    *) echo "unknown option: $1" >&2; usage;;
  esac
done
[[ -n $name && -n $zone ]] || { echo "error: --name and --zone are required" >&2; exit 2; }

run() {
  if [[ $dry == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
on_all() {  # the same command on every worker of the slice
  run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case $action in
  create)
    run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$type" \
        --version "$version";;
  install)  # copy this checkout to every worker, then install it there (configs/ included)
    run gcloud compute tpus tpu-vm scp --recurse "$root" "$name:~/simclr_jax" --zone "$zone" \
        --worker=all
    on_all "pip install -U 'jax[tpu]' && pip install -e \$HOME/simclr_jax";;
  train)
    [[ -n $config && -n $workdir ]] || { echo "error: train needs --config and --workdir" >&2; exit 2; }
    train=$(printf '%q ' python3 -m simclr_jax.main --config="$config" --workdir="$workdir" \
            "${extra[@]}")
    on_all "cd \$HOME/simclr_jax && set -o pipefail && $train 2>&1 | tee -a \$HOME/simclr_jax.log";;
  tensorboard)
    [[ -n $workdir ]] || { echo "error: tensorboard needs --workdir" >&2; exit 2; }
    run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=0 \
        --command "nohup tensorboard --logdir=$workdir --port=6006 >/dev/null 2>&1 &" \
        -- -L 6006:localhost:6006;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet;;
  *) usage;;
esac
