"""MoCo v2 (Chen et al., 2020): MoCo v1 + MLP head (2048-2048-128), aug+ (blur), cosine LR, T 0.2.

imagenet_200ep / imagenet_800ep — ResNet-50, SGD lr 0.03 (batch 256), wd 1e-4, K 65536,
    m 0.999, shuffle BN over groups of 32, cosine LR stepped once per epoch (main_moco.py).
    Published linear top-1: 67.5 / 71.1 (8 V100).
    python -m simclr_jax.main --config configs/moco_v2.py:imagenet_200ep --workdir DIR
cifar10_colab / cifar10_colab_symmetric — the official CIFAR-10 colab (moco/colab/
    moco_cifar10_demo.ipynb), exactly: ResNet-18 (CIFAR stem, torchvision init), linear 512->128
    head, BN in 8 groups of 64, shuffle BN over the whole batch, batch 512, SGD lr 0.06, wd 5e-4,
    K 4096, m 0.99, T 0.1, 200 epochs, per-epoch cosine from epoch 1, RandomResizedCrop(32)
    (0.08-1), jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, CIFAR mean/std, kNN (k 200,
    T 0.1) on the 128-d head output. Published kNN top-1 after 200 epochs: 82.6 (asymmetric),
    85.3 (symmetric), one V100, ~20 s per epoch. benchmarks/reproduce.sh runs it.
    python -m simclr_jax.main --config configs/moco_v2.py:cifar10_colab --workdir DIR
cifar10 — the ImageNet MoCo v2 recipe at CIFAR size (MLP head, crop 0.2, ImageNet mean/std,
    kNN on backbone features; R18 CIFAR stem, batch 512, lr 0.06, wd 5e-4, K 4096, m 0.99,
    T 0.1, 200 epochs). Not the colab: its kNN figure is not comparable to 82.6.
torchvision ResNet init (kaiming normal fan_out, no zero-init of the last BN). Deliberate
differences from the official code and the hardware each number needs: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_200ep", "imagenet_800ep", "cifar10", "cifar10_colab",
           "cifar10_colab_symmetric")


@with_presets(PRESETS, default="imagenet_200ep")
def get_config(arg):
    c = base_config()
    c.method = "moco"
    c.head.kind, c.head.hidden_dim, c.head.out_dim = "mlp", 2048, 128
    c.ema.schedule = "constant"
    c.moco.shuffle_bn = True
    c.model.bn_group_size = 32
    c.model.conv_init, c.model.zero_init_residual = "torchvision", False
    c.optimizer.name, c.optimizer.lr_scaling, c.optimizer.decay_all = "sgd", "linear", True
    c.lr_schedule = "cosine"
    c.warmup_epochs = 0.0
    if arg.startswith("cifar10_colab"):
        return colab(c, symmetric=arg.endswith("_symmetric"))
    if arg.startswith("imagenet"):
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = 50, "imagenet"
        c.batch_size, c.num_epochs = 256, 200.0 if arg == "imagenet_200ep" else 800.0
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.03, 1e-4
        c.moco.queue_size, c.ema.base = 65536, 0.999
        c.loss.temperature = 0.2
        c.lr_schedule = "cosine_per_epoch"       # adjust_learning_rate once per epoch
        c.eval.knn_temperature = 0.07
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
        view = aug_presets.moco_v2()
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.head.hidden_dim = 512
        c.batch_size, c.num_epochs = 512, 200.0
        c.optimizer.base_lr = 0.06 * 256 / 512   # 0.06 at batch 512 under linear scaling
        c.optimizer.weight_decay = 5e-4
        c.moco.queue_size, c.ema.base = 4096, 0.99
        c.loss.temperature = 0.1
        c.eval.every_steps = 2000
        view = aug_presets.moco_v2()
        view.blur_prob = 0.0                    # the colab drops blur at 32 px
    c.aug = aug_presets.two_views(view, view)
    return c


def colab(c, symmetric: bool):
    """The MoCo CIFAR-10 colab's every setting (its argparse defaults, args.cos=True)."""
    c.dataset.name, c.dataset.image_size = "cifar10", 32
    c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
        "train", "train", "test")
    c.model.depth, c.model.width, c.model.stem = 18, 1.0, "cifar"
    c.model.bn_group_size = 64                  # --bn-splits 8 at batch 512
    c.head.kind, c.head.out_dim = "linear", 128  # resnet18(num_classes=128): Linear(512, 128)
    c.moco.queue_size, c.moco.shuffle_bn, c.moco.symmetric = 4096, True, symmetric
    c.ema.base = 0.99
    c.loss.temperature = 0.1
    c.batch_size, c.num_epochs = 512, 200.0
    c.optimizer.base_lr, c.optimizer.weight_decay = 0.03, 5e-4   # 0.06 at batch 512
    c.optimizer.momentum, c.optimizer.nesterov = 0.9, False
    c.lr_schedule = "cosine_per_epoch_from_1"   # lr of epoch e = 0.06 (1 + cos(pi e / 200)) / 2
    view = aug_presets.view(crop_area_min=0.08, resize_method="bilinear", jitter_prob=0.8,
                            brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                            grayscale_prob=0.2, blur_prob=0.0, normalize="cifar10")
    c.aug = aug_presets.two_views(view, view)
    c.probe.enabled = False                     # the colab has no online probe
    c.eval.knn_features = "projection"          # its kNN monitor scores the 128-d output
    c.eval.knn_k, c.eval.knn_temperature = 200, 0.1
    c.eval.batch_size = 512
    c.eval.every_steps = 97 * 20                # every 20 epochs (97 steps each)
    c.checkpoint_every_steps = 97 * 10
    return c
