"""Presets against the official code's settings, transcribed from the reference sources (see
FIDELITY.md for where each comes from), and the hooks the MoCo CIFAR-10 colab preset needs."""
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from tiny_configs import ROOT, load_config, tiny

from simclr_jax.data import aug_presets, augment_tf
from simclr_jax.methods import encoder_network, get_method
from simclr_jax.train import make_context

# facebookresearch/moco colab/moco_cifar10_demo.ipynb: argparse defaults + args.cos = True.
COLAB = dict(batch_size=512, lr=0.06, wd=5e-4, momentum=0.9, moco_dim=128, moco_k=4096,
             moco_m=0.99, moco_t=0.1, bn_splits=8, knn_k=200, knn_t=0.1, epochs=200,
             mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))


@pytest.mark.parametrize("preset,symmetric", [("cifar10_colab", False),
                                              ("cifar10_colab_symmetric", True)])
def test_moco_colab_preset_is_the_colab(preset, symmetric):
    c = load_config("moco_v2.py", preset)
    assert c.method == "moco" and c.moco.symmetric == symmetric
    assert (c.model.name, c.model.depth, c.model.stem, c.model.width) == ("resnet", 18, "cifar", 1)
    # torchvision resnet18(norm_layer=SplitBatchNorm): default init, downsample only on change
    assert (c.model.conv_init, c.model.zero_init_residual, c.model.shortcut) == (
        "torchvision", False, "on_shape_change")
    assert c.batch_size // c.model.bn_group_size == COLAB["bn_splits"]
    assert (c.head.kind, c.head.out_dim) == ("linear", COLAB["moco_dim"])  # Linear(512, 128)
    assert c.moco.shuffle_bn and c.moco.queue_size == COLAB["moco_k"]
    assert (c.ema.base, c.ema.schedule) == (COLAB["moco_m"], "constant")
    assert c.loss.temperature == COLAB["moco_t"]
    assert c.batch_size == COLAB["batch_size"] and c.num_epochs == COLAB["epochs"]
    assert c.optimizer.name == "sgd" and not c.optimizer.nesterov and c.optimizer.decay_all
    assert c.optimizer.base_lr * c.batch_size / 256 == pytest.approx(COLAB["lr"])
    assert c.optimizer.lr_scaling == "linear"
    assert (c.optimizer.weight_decay, c.optimizer.momentum) == (COLAB["wd"], COLAB["momentum"])
    assert c.lr_schedule == "cosine_per_epoch_from_1" and c.warmup_epochs == 0
    # RandomResizedCrop(32) (scale 0.08-1, ratio 3/4-4/3, bilinear), flip 0.5,
    # RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8), RandomGrayscale(0.2), Normalize.
    want_view = aug_presets.view(crop_area_min=0.08, resize_method="bilinear", jitter_prob=0.8,
                                 brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                                 grayscale_prob=0.2, blur_prob=0.0, normalize="cifar10")
    assert c.aug.view1.to_dict() == c.aug.view2.to_dict() == want_view.to_dict()
    assert (c.eval.knn_k, c.eval.knn_temperature, c.eval.knn_features) == (
        COLAB["knn_k"], COLAB["knn_t"], "projection")
    assert (c.dataset.name, c.dataset.train_split, c.dataset.knn_train_split,
            c.dataset.knn_test_split) == ("cifar10", "train", "train", "test")
    get_method("moco").validate(c, make_context(c, 50_000))


def test_cifar10_normalisation_uses_the_colab_mean_and_std():
    image = np.full((4, 4, 3), 128, np.uint8)
    view = aug_presets.view(crop_area_min=1.0, crop_aspect_min=1.0, crop_aspect_max=1.0,
                            flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
                            normalize="cifar10")
    out = augment_tf.augment_view(image, view, 4, tf.constant([0, 0]))
    want = (128 / 255.0 - np.array(COLAB["mean"])) / np.array(COLAB["std"])
    np.testing.assert_allclose(out.numpy()[0, 0], want, atol=1e-5)
    with pytest.raises(ValueError, match="cifar10"):
        aug_presets.view(normalize="cifar100")


def test_knn_on_projection_scores_the_head_output():
    """The colab's monitor calls encoder_q: backbone + fc, 128-d (normalised by the kNN)."""
    config = tiny("moco_v2.py", "cifar10_colab", batch_size=8, image_size=8)
    network = get_method("moco").build_network(config, num_classes=0)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 8, 8, 3)), jnp.float32)
    variables = network.init(jax.random.PRNGKey(0), x, train=False)
    out = network.apply(variables, x, train=False)
    monitor = encoder_network(get_method("moco"), config)      # what the kNN monitor applies
    feats = monitor.apply(variables, x, method=type(monitor).encode)
    assert feats.shape == (8, config.head.out_dim)
    np.testing.assert_allclose(feats, out["proj"], rtol=1e-6)
    config.unlock()
    config.eval.knn_features = "backbone"
    monitor = encoder_network(get_method("moco"), config)
    np.testing.assert_allclose(monitor.apply(variables, x, method=type(monitor).encode),
                               out["features"], rtol=1e-6)
    config.eval.knn_features = "logits"
    with pytest.raises(ValueError, match="knn_features"):
        encoder_network(get_method("moco"), config)


# ----------------------------------------------------------------------------- presets

def _views(c):
    return c.aug.view1, c.aug.view2


def test_simclr_cifar10_is_the_readme_command():
    # google-research/simclr README: --train_batch_size=512 --train_epochs=1000
    # --learning_rate=1.0 --weight_decay=1e-4 --temperature=0.5 --resnet_depth=18
    # --use_blur=False --color_jitter_strength=0.5; defaults num_proj_layers=3, warmup 10.
    for preset in ("cifar10", "cifar10_folder"):
        c = load_config("simclr_v1.py", preset)
        assert (c.batch_size, c.num_epochs, c.warmup_epochs) == (512, 1000, 10)
        assert (c.optimizer.name, c.optimizer.base_lr, c.optimizer.weight_decay) == (
            "lars", 1.0, 1e-4)
        assert c.optimizer.lars_lr == "before_momentum"
        assert c.loss.temperature == 0.5 and c.head.num_layers == 3
        assert (c.model.depth, c.model.shortcut) == (18, "first_block_of_stage")
        for v in _views(c):
            assert v.blur_prob == 0.0 and v.brightness == pytest.approx(0.4)


@pytest.mark.parametrize("file,preset", [("simclr_v1.py", "imagenet"),
                                         ("simclr_v2.py", "r50_1x_sk"), ("byol.py", "cifar10")])
def test_tf_references_pad_the_stem_pool_same(file, preset):
    assert load_config(file, preset).model.stem_pool_padding == "same"


@pytest.mark.parametrize("preset,lr,wd,m0", [("r50_100ep", 0.6, 1e-6, 0.99),
                                             ("r50_300ep", 0.3, 1e-6, 0.99),
                                             ("r50_1000ep", 0.3, 1.5e-6, 0.996)])
def test_moco_v3_resnet_presets_follow_config_md(preset, lr, wd, m0):
    c = load_config("moco_v3.py", preset)
    assert (c.optimizer.base_lr, c.optimizer.weight_decay, c.ema.base) == (lr, wd, m0)
    assert c.optimizer.lars_lr == "after_momentum"               # moco/optimizer.py
    assert all(v.crop_area_min == 0.2 for v in _views(c))         # --crop-min=.2
    assert (c.model.conv_init, c.model.zero_init_residual) == ("torchvision", True)


@pytest.mark.parametrize("preset", ["vit_small", "vit_base"])
def test_moco_v3_vit_adamw_uses_torch_default_betas(preset):
    c = load_config("moco_v3.py", preset)
    assert (c.optimizer.name, c.optimizer.b1, c.optimizer.b2) == ("adamw", 0.9, 0.999)


@pytest.mark.parametrize("preset,wd,lr,tau", [("imagenet_300ep", 1e-6, 0.3, 0.99),
                                              ("imagenet_1000ep", 1.5e-6, 0.2, 0.996)])
def test_byol_presets_follow_its_config(preset, wd, lr, tau):
    # deepmind-research byol/configs/byol.py: _LR_PRESETS, _WD_PRESETS, _EMA_PRESETS.
    c = load_config("byol.py", preset)
    assert (c.optimizer.weight_decay, c.optimizer.base_lr, c.ema.base) == (wd, lr, tau)
    assert c.optimizer.lars_lr == "after_momentum"


@pytest.mark.parametrize("file,preset", [("moco_v1.py", "imagenet_200ep"),
                                         ("moco_v2.py", "imagenet_800ep")])
def test_moco_v1_v2_use_torchvision_init(file, preset):
    c = load_config(file, preset)
    assert (c.model.conv_init, c.model.zero_init_residual) == ("torchvision", False)


@pytest.mark.parametrize("preset,epochs", [("imagenet_1pct", 60), ("imagenet_10pct", 30),
                                           ("cifar10_10pct", 30)])
def test_finetune_length_follows_simclr_v2(preset, epochs):
    assert load_config("finetune.py", preset).num_epochs == epochs


@pytest.mark.parametrize("preset,nesterov,base_lr,batch,epochs,schedule", [
    ("moco_v3", False, 0.1, 1024, 90, "cosine_per_epoch"),        # moco-v3 main_lincls.py
    ("moco_v3_vit", False, 3.0, 1024, 90, "cosine_per_epoch"),    # CONFIG.md --lr=3
    ("byol", True, 0.2, 1024, 80, "cosine")])                     # byol configs/eval.py
def test_linear_eval_presets(preset, nesterov, base_lr, batch, epochs, schedule):
    c = load_config("linear_eval.py", preset)
    assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay) == ("sgd", 0.9, 0)
    assert (c.optimizer.nesterov, c.optimizer.base_lr, c.optimizer.lr_scaling) == (
        nesterov, base_lr, "linear")
    assert (c.batch_size, c.num_epochs, c.lr_schedule, c.warmup_epochs) == (
        batch, epochs, schedule, 0)


# ----------------------------------------------------------------------------- reproduce.sh

def test_reproduce_script_dry_run_prints_every_command():
    script = os.path.join(ROOT, "benchmarks", "reproduce.sh")
    out = subprocess.run(["bash", script, "--dry-run", "all"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "configs/moco_v2.py:cifar10_colab" in out.stdout and "82.6" in out.stdout
    assert "configs/simclr_v1.py:cifar10" in out.stdout and "91" in out.stdout
    bad = subprocess.run(["bash", script, "--dry-run", "nonsense"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
