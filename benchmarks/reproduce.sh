#!/usr/bin/env bash
# Reproduce published CIFAR-10 results on one accelerator and print each next to its reference.
#
#   bash benchmarks/reproduce.sh [--dry-run] [--steps N] [--workdir DIR] [--data-dir DIR] \
#       RECIPE... [-- EXTRA_OVERRIDES...]
#
# RECIPE:
#   moco_colab            MoCo CIFAR-10 colab (facebookresearch/moco, colab/moco_cifar10_demo),
#                         ResNet-18, 200 epochs: published kNN top-1 82.6 (one V100, ~1.4 h)
#   moco_colab_symmetric  the same with the colab's symmetric loss: published kNN top-1 85.3
#   simclr_cifar10        SimCLR README CIFAR-10 command, ResNet-18, 1000 epochs pretraining, then
#                         100 epochs linear evaluation: published ~91 top-1 (one GPU, ~1-2 days)
#   all                   the three above
# --dry-run   print the commands only.   --steps N   stop every run after N steps (smoke test;
# the figures are then meaningless).   --data-dir   TFDS data_dir holding cifar10 (downloaded on
# first use otherwise).   Anything after `--` is appended to every command (e.g.
# --config.model.dtype=bfloat16). Results: DIR/<recipe>/..., and a table on stdout.
# FIDELITY.md lists every known difference from the official code.
set -euo pipefail

usage_error() { echo "reproduce.sh: $1 (see the header of benchmarks/reproduce.sh)" >&2; exit 2; }

dry_run=0; steps=""; workdir=/tmp/simclr_jax_reproduce; data_dir=""; recipes=(); extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --steps) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || usage_error "--steps needs a positive integer"
             steps=$2; shift 2 ;;
    --workdir) [[ $# -ge 2 ]] || usage_error "--workdir needs a directory"; workdir=$2; shift 2 ;;
    --data-dir) [[ $# -ge 2 ]] || usage_error "--data-dir needs a directory"; data_dir=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    moco_colab|moco_colab_symmetric|simclr_cifar10) recipes+=("$1"); shift ;;
    all) recipes+=(moco_colab moco_colab_symmetric simclr_cifar10); shift ;;
    *) usage_error "unknown recipe or option '$1'; recipes: moco_colab, moco_colab_symmetric, simclr_cifar10, all" ;;
  esac
done
[[ ${#recipes[@]} -gt 0 ]] || usage_error "name at least one recipe"

python=${PYTHON:-python}
common=()
[[ -n "$data_dir" ]] && common+=("--config.dataset.data_dir=$data_dir")
[[ -n "$steps" ]] && common+=("--config.num_steps=$steps")
results=()

run() {   # run NAME python-args...: print the command, run it unless --dry-run, time it
  local name=$1; shift
  local cmd=("$python" -m simclr_jax.main "$@" "${common[@]}" "${extra[@]}")
  echo "+ ${cmd[*]}"
  [[ $dry_run == 1 ]] && return 0
  local start=$SECONDS
  "${cmd[@]}"
  echo "$name: $((SECONDS - start)) s wall"
}

metric() {  # metric FILE KEY: the value as a percentage, or "-" when absent
  [[ $dry_run == 1 ]] && { echo "-"; return; }
  "$python" - "$1" "$2" <<'PY'
import json, sys
try:
    print(f"{100 * json.load(open(sys.argv[1]))[sys.argv[2]]:.1f}")
except (OSError, KeyError, ValueError):
    print("-")
PY
}

for recipe in "${recipes[@]}"; do
  out=$workdir/$recipe
  case $recipe in
    moco_colab|moco_colab_symmetric)
      preset=cifar10_colab; published=82.6
      [[ $recipe == moco_colab_symmetric ]] && { preset=cifar10_colab_symmetric; published=85.3; }
      run "$recipe" --config "configs/moco_v2.py:$preset" --workdir "$out"
      results+=("$recipe|kNN top-1 (k 200, 128-d head output)|$(metric "$out/final_metrics.json" knn_top1)|$published|1x V100, 200 epochs") ;;
    simclr_cifar10)
      run "$recipe pretraining" --config configs/simclr_v1.py:cifar10 --workdir "$out/pretrain"
      run "$recipe linear eval" --config configs/linear_eval.py:simclr_cifar10 \
          --config.init_from="$out/pretrain" --workdir "$out/linear"
      results+=("$recipe|linear top-1 (test)|$(metric "$out/linear/linear_eval.json" top1)|~91|1 GPU, 1000 + 100 epochs") ;;
  esac
done

echo
printf "%-22s %-38s %9s %10s  %s\n" recipe metric measured published "reference hardware"
for row in "${results[@]}"; do
  IFS='|' read -r r m got pub hw <<<"$row"
  printf "%-22s %-38s %9s %10s  %s\n" "$r" "$m" "$got" "$pub" "$hw"
done
[[ -n "$steps" ]] && echo "(--steps $steps: a smoke run, not comparable with the published figures)"
exit 0
