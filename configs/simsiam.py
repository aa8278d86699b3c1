"""SimSiam (Chen & He, 2021): predictor + stop-gradient, no negatives, no momentum encoder.

imagenet_100ep — the README's command (facebookresearch/simsiam main_simsiam.py defaults +
    --fix-pred-lr): ResNet-50 (torchvision init, zero-init residual), projector 2048-2048-2048
    (3 layers, last BN without affine), predictor bottleneck 512, SGD lr 0.05 x B/256 (0.1 at
    batch 512), momentum 0.9, wd 1e-4 on every parameter, cosine stepped once per epoch, no
    warmup, 100 epochs, the predictor at the fixed peak LR, MoCo v2's augmentation at 224 px,
    global (Sync) BN. Published linear top-1: 68.1 (README; 8 V100, PyTorch 1.7).
    python -m simclr_jax.main --config configs/simsiam.py:imagenet_100ep --workdir DIR
cifar10 — the paper's CIFAR experiment (Appendix D; no official code): the CIFAR ResNet-18
    (3x3 stem, no max pool), a 2-layer projector, 32 px, no blur, SGD base lr 0.03 x B/256,
    wd 5e-4, momentum 0.9, batch 512, cosine, 800 epochs. Published: 91.8 (the paper's
    Appendix D). Choices the paper leaves open are in FIDELITY.md.
    python -m simclr_jax.main --config configs/simsiam.py:cifar10 --workdir DIR
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_100ep", "cifar10")


@with_presets(PRESETS, default="imagenet_100ep")
def get_config(arg):
    c = base_config()
    c.method = "simsiam"
    c.head.num_layers, c.head.hidden_dim, c.head.out_dim = 3, 0, 2048   # 0: backbone width
    c.predictor.hidden_dim = 512                                        # --pred-dim
    c.simsiam.fix_pred_lr = True
    c.model.conv_init, c.model.zero_init_residual = "torchvision", True
    c.optimizer.name, c.optimizer.lr_scaling, c.optimizer.decay_all = "sgd", "linear", True
    c.optimizer.momentum, c.optimizer.nesterov = 0.9, False
    c.warmup_epochs = 0.0
    if arg == "imagenet_100ep":
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = 50, "imagenet"
        c.batch_size, c.num_epochs = 512, 100.0
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.05, 1e-4
        c.lr_schedule = "cosine_per_epoch"       # adjust_learning_rate once per epoch
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
        view = aug_presets.moco_v2()             # "the default augmentation recipe from MoCo v2"
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.head.num_layers = 2                    # "The projection MLP has 2 layers"
        c.batch_size, c.num_epochs = 512, 800.0
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.03, 5e-4
        c.lr_schedule = "cosine"
        c.eval.every_steps = 2000
        view = aug_presets.moco_v2()
        view.blur_prob = 0.0                     # "We do not use blur augmentation"
        view.normalize = "cifar10"
    c.aug = aug_presets.two_views(view, view)
    return c
