"""InstDisc / NPID (Wu et al., 2018): a memory bank of one 128-d feature per training image,
NCE against K = 4096 uniformly drawn bank rows, T 0.07, bank momentum 0.5 (lemniscate.pytorch).

imagenet_r50 — main.py's defaults with --arch resnet50: linear 128-d head + L2 norm, SGD lr 0.03
    (batch 256), momentum 0.9, wd 1e-4 on all parameters, 200 epochs, LR x0.1 at epochs 120 and
    160; RandomResizedCrop(224, scale 0.2-1), grayscale 0.2 then colour jitter 0.4 (x4) always,
    flip. Published: linear top-1 54.0 (MoCo paper's table; the InstDisc paper's conv5), kNN
    top-1 46.8 (lemniscate README, the released NCE model). Hardware: not stated (one machine,
    DataParallel over its GPUs; the bank, 656 MB, lives on one GPU there).
    python -m simclr_jax.main --config configs/instdisc.py:imagenet_r50 --workdir DIR
imagenet_r18 — the README command (--arch resnet18): kNN top-1 41.0 (README).
imagenet_r50_softmax65536 — the README's "updated model": softmax-CE over the own row and
    65,536 drawn rows of the bank. Published: linear top-1 58.5 (README). Its other settings
    are not released; main.py's are used.
cifar10 — the README's CIFAR-10 command (`cifar.py --nce-k 0 --nce-t 0.1 --lr 0.03`): the
    non-parametric softmax over all 50,000 bank rows, T 0.1, ResNet-18 (CIFAR stem), batch 128,
    wd 5e-4, 200 epochs, LR x0.1 at 120 and 160 (cifar.py's adjust_learning_rate), crop scale
    0.2-1, colour jitter 0.4 (x4) always then grayscale 0.2, NO flip; kNN k 200, sigma 0.1 on
    the normalised 128-d output (test.py). Published: kNN top-1 ~80 (paper, CIFAR-10 tables;
    not re-checked here). One GPU.
    python -m simclr_jax.main --config configs/instdisc.py:cifar10 --workdir DIR
cifar10_nce — cifar.py's own defaults instead: NCE with K 4096 at T 0.1.
Each preset's every difference from the official code: FIDELITY.md. Any preset with `,runlocal`
runs on a laptop (the bank is the digits' size; K shrinks to 64).
"""
import ml_collections

from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_r50", "imagenet_r18", "imagenet_r50_softmax65536", "cifar10", "cifar10_nce")


@with_presets(PRESETS, default="imagenet_r50")
def get_config(arg):
    c = base_config()
    c.method = "instdisc"
    c.head.kind, c.head.out_dim = "linear", 128            # fc -> low_dim, then Normalize
    c.instdisc.loss, c.instdisc.num_negatives, c.instdisc.bank_momentum = "nce", 4096, 0.5
    c.model.conv_init, c.model.zero_init_residual = "torchvision", False
    c.optimizer.name, c.optimizer.lr_scaling = "sgd", "linear"
    c.optimizer.momentum, c.optimizer.nesterov, c.optimizer.decay_all = 0.9, False, True
    c.num_epochs, c.warmup_epochs = 200.0, 0.0
    c.lr_schedule, c.lr_boundaries_epochs = "step", (120, 160)
    c.eval.knn_k, c.eval.knn_features = 200, "projection"   # test.py's kNN on the 128-d output
    if arg.startswith("imagenet"):
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = (18 if arg == "imagenet_r18" else 50), "imagenet"
        c.batch_size = 256
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.03, 1e-4
        c.loss.temperature = 0.07
        if arg == "imagenet_r50_softmax65536":
            c.instdisc.loss, c.instdisc.num_negatives = "softmax", 65536
        view = aug_presets.moco_v1()    # main.py's: MoCo v1 copied these transforms
        c.eval.knn_temperature = 0.07   # kNN sigma = --nce-t
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
            "train", "train", "test")
        c.model.depth, c.model.stem = 18, "cifar"
        c.batch_size = 128
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.06, 5e-4   # 0.03 at batch 128
        c.loss.temperature = 0.1
        if arg == "cifar10":
            c.instdisc.loss, c.instdisc.num_negatives = "softmax", 0
        view = aug_presets.view(crop_area_min=0.2, resize_method="bilinear", flip_prob=0.0,
                                jitter_prob=1.0, brightness=0.4, contrast=0.4, saturation=0.4,
                                hue=0.4, grayscale_prob=0.2, grayscale_first=False,
                                blur_prob=0.0, normalize="cifar10")
        c.eval.knn_temperature = 0.1
        c.eval.every_steps = 2000
    c.aug = ml_collections.ConfigDict(dict(view1=view, on_device=False))   # one view
    return c
