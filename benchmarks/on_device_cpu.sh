#!/usr/bin/env bash
# Training images/s on this machine's CPU with the tf.data host pipeline and with
# dataset.on_device, for the quickstart and simclr_v1.py:cifar10,runlocal (BENCHMARKS.md).
#   bash benchmarks/on_device_cpu.sh [STEPS]      # default 60 steps, logged every STEPS/3
#   CONFIGS="configs/byol.py:cifar10,runlocal" bash benchmarks/on_device_cpu.sh   # other configs
# images/s = the mean of the logged intervals after the first (which holds the compile).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${1:-60}
W=$(mktemp -d)
echo "| config | input | images/s (mean of logged intervals after the first) |"
echo "|---|---|---|"
for cfg in ${CONFIGS:-configs/quickstart.py configs/simclr_v1.py:cifar10,runlocal}; do
  for on in false true; do
    dir="$W/$(basename "${cfg%%:*}" .py)_$on"
    "$PY" -m simclr_jax.main --config "$cfg" --workdir "$dir" --config.num_steps="$STEPS" \
      --config.log_every_steps=$((STEPS / 3)) --config.checkpoint_every_steps=100000 \
      --config.eval.every_steps=100000 --config.dataset.knn_train_split= \
      --config.log_images=false --config.dataset.on_device=$on > "$dir.log" 2>&1
    rate=$("$PY" -c "import json,sys; r=[json.loads(l)['images_per_sec_per_device'] for l in open(sys.argv[1]) if 'images_per_sec_per_device' in l][1:]; print(f'{sum(r)/len(r):.0f}')" "$dir/metrics.jsonl")
    echo "| $cfg | $([ $on = true ] && echo dataset.on_device || echo tf.data host) | $rate |"
  done
done
rm -rf "$W"
