"""Standalone weighted-kNN evaluation (InstDisc) of a pretrained encoder; nothing is trained.

    python -m simclr_jax.main --config configs/knn_eval.py \
        --config.init_from=runs/simclr_c10 --workdir runs/simclr_c10_knn

Unset fields come from the pretraining run: its dataset, kNN memory bank / test splits, image
size, k and temperature. Override e.g. --config.eval.knn_k=20 --config.init_step=50000, or
--config.dataset.knn_train_split='train[:10%]' for a smaller memory bank.
Output: workdir/knn_eval.json (knn_top1, knn_top5, num_bank_examples, num_test_examples, ...).
"""
from simclr_jax.config_base import with_presets
from simclr_jax.evaluate.protocol_config import knn_config


@with_presets(())
def get_config():
    return knn_config()
