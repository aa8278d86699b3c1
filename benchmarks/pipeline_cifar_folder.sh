#!/usr/bin/env bash
# The whole SimCLR pipeline on the CIFAR-10 image folder within a fixed CPU budget:
# pretrain -> kNN -> linear eval -> 10% fine-tune -> distill, next to baselines trained for the
# same budget: the same encoder at random initialisation (linear eval) and a supervised network
# trained from scratch on the same 10% of labels.
#
#   bash benchmarks/pipeline_cifar_folder.sh /path/to/cifar10-train /tmp/pipeline [PRETRAIN_STEPS]
#
# The last 500 images of every class (5,000) are the evaluation split; the rest is training data.
set -euo pipefail
data=$(cd "$1" && pwd); out=$2; steps=${3:-100}
mkdir -p "$out"
folder="folder:$data"
small="--config.model.width=0.25"
split="--config.dataset.name=$folder --config.dataset.train_split=train[:4500]"
run() { echo "+ $*" >&2; /usr/bin/time -f "%e s" python -m simclr_jax.main "$@" 2>&1 | grep -v "^I1\|^W1\|^I0000\|^WARNING" | tail -12; }

# 1. SimCLR pretraining (and, at lr 0, a one-step "random init" run as the baseline encoder).
run --config configs/simclr_v1.py:cifar10_folder --workdir "$out/pretrain" $small \
    --config.dataset.name="$folder" --config.batch_size=256 \
    --config.num_steps="$steps" --config.warmup_epochs=1 --config.eval.every_steps="$steps"
run --config configs/simclr_v1.py:cifar10_folder --workdir "$out/random_init" $small \
    --config.dataset.name="$folder" --config.batch_size=256 \
    --config.num_steps=1 --config.optimizer.base_lr=0.0 --config.eval.knn_at_init=False

# 2. Linear evaluation of both encoders (frozen backbone).
for enc in pretrain random_init; do
  run --config configs/linear_eval.py:simclr_cifar10 --config.init_from="$out/$enc" \
      --workdir "$out/linear_$enc" --config.batch_size=256 --config.num_epochs=2
done

# 3. Fine-tuning on 10% of the labels (from projection layer 1), and the same network trained
#    from scratch (random init) on the same 10% for the same number of epochs.
for enc in pretrain random_init; do
  run --config configs/finetune.py:cifar10_10pct --config.init_from="$out/$enc" \
      --workdir "$out/finetune10_$enc" $split --config.dataset.eval_split=train[4500:] \
      --config.batch_size=256 --config.num_epochs=6
done

# 4. Distillation of the fine-tuned teacher into a student of the same size, unlabelled images.
run --config configs/distill.py:cifar10 --config.teacher_from="$out/finetune10_pretrain" \
    --workdir "$out/distill" $small $split --config.dataset.eval_split=train[4500:] \
    --config.batch_size=256 --config.num_steps=60

python - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def get(name, key):
    for f in ("final_metrics.json", "linear_eval.json", "finetune.json", "distill.json"):
        p = os.path.join(out, name, f)
        if os.path.exists(p):
            return json.load(open(p)).get(key)
rows = [("kNN top-1 (pretrained)", get("pretrain", "knn_top1")),
        ("kNN top-1 (random init)", get("pretrain", "knn_top1_init")),
        ("linear eval top-1 (pretrained)", get("linear_pretrain", "top1")),
        ("linear eval top-1 (random init)", get("linear_random_init", "top1")),
        ("10% fine-tune top-1 (pretrained)", get("finetune10_pretrain", "top1")),
        ("10% supervised from scratch top-1", get("finetune10_random_init", "top1")),
        ("distilled student top-1", get("distill", "top1")),
        ("distilled student agreement with teacher", get("distill", "agreement"))]
print("| stage | value |\n|---|---|")
for name, v in rows:
    print(f"| {name} | {v if v is None else round(v, 4)} |")
PY
