"""SimCLR v2 (Chen et al., 2020b): deeper/wider/SK ResNets and a 3-layer projection head.

r50_1x / r50_1x_sk / r152_3x_sk — ImageNet, batch 4096, LARS lr 0.1 x sqrt(B), wd 1e-4,
    T 0.1, 800 epochs, warmup 5% (40 epochs), colour strength 1.0, blur 0.5; SK ratio 0.0625
    switches on Selective Kernels with the ResNet-D stem and shortcut.
    Published linear top-1: R50-1x 71.7, R152-3x+SK 79.8; fine-tuned on 1%/10% of labels:
    57.9/68.4 (R50-1x), 74.9/80.1 (R152-3x+SK) — run configs/finetune.py afterwards from
    projection layer 1 (`ft_proj_selector=1`).
    python -m simclr_jax.main --config configs/simclr_v2.py:r50_1x --workdir gs://.../v2_r50
r50_1x_memory / cifar10_memory — the same with v2's optional memory: a momentum encoder
    (m 0.999) whose keys of both views are queued (K 65536; CIFAR 4096) as extra negatives.
    The paper reports ~1% linear top-1 from it at batch 4096 (more at small batches).
cifar10 — ResNet-50 1x with the CIFAR stem, 3-layer head, batch 512, LARS lr 1.0 x B/256,
    wd 1e-4, T 0.5, 800 epochs, colour strength 0.5, no blur.
Architecture as SimCLR tf2's resnet.py (projection shortcuts, TF SAME stem max pool). Deliberate
differences from the official code and the hardware each number needs: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("r50_1x", "r50_1x_sk", "r152_3x_sk", "cifar10", "r50_1x_memory", "cifar10_memory")


@with_presets(PRESETS, default="r50_1x")
def get_config(arg):
    memory = arg.endswith("_memory")
    arg = arg[:-len("_memory")] if memory else arg
    c = base_config()
    c.method = "simclr"
    c.simclr.memory = memory
    c.ema.base, c.ema.schedule = 0.999, "constant"
    c.simclr.memory_size = 4096 if arg == "cifar10" else 65536
    c.head.kind, c.head.num_layers, c.head.hidden_dim, c.head.out_dim = "bn_mlp", 3, 0, 128
    c.model.shortcut, c.model.stem_pool_padding = "first_block_of_stage", "same"
    c.optimizer.name = "lars"
    if arg == "cifar10":
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train", "test"
        c.model.depth, c.model.width, c.model.stem = 50, 1.0, "cifar"
        c.batch_size, c.num_epochs, c.warmup_epochs = 512, 800.0, 10.0
        c.optimizer.base_lr, c.optimizer.lr_scaling, c.optimizer.weight_decay = 1.0, "linear", 1e-4
        c.loss.temperature = 0.5
        view = aug_presets.simclr(strength=0.5, blur_prob=0.0)
        c.eval.every_steps = 5000
    else:
        depth, width, sk = {"r50_1x": (50, 1.0, 0.0), "r50_1x_sk": (50, 1.0, 0.0625),
                            "r152_3x_sk": (152, 3.0, 0.0625)}[arg]
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.width, c.model.stem, c.model.sk_ratio = depth, width, "imagenet", sk
        c.batch_size, c.num_epochs, c.warmup_epochs = 4096, 800.0, 40.0
        c.optimizer.base_lr, c.optimizer.lr_scaling, c.optimizer.weight_decay = 0.1, "sqrt", 1e-4
        c.loss.temperature = 0.1
        view = aug_presets.simclr(strength=1.0, blur_prob=0.5)
        c.eval.every_steps = 10000
        c.eval.batch_size = 1024
        c.eval.knn_temperature = 0.07
        c.checkpoint_every_steps = 2000
    c.aug = aug_presets.two_views(view, view)
    return c
