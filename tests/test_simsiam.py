"""SimSiam against facebookresearch/simsiam (builder.py, main_simsiam.py), and the parameter
groups of the plug-in against a numpy transcription of PyTorch's SGD with param groups."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from tiny_configs import load_config, tiny

from simclr_jax import optim, train
from simclr_jax.data import aug_presets
from simclr_jax.methods import FOREVER, ParamGroup, get_method
from simclr_jax.methods.simsiam import build_heads, negative_cosine


# ----------------------------------------------------------------------------- loss

def reference_loss(p1, p2, z1, z2):
    """main_simsiam.py: criterion = nn.CosineSimilarity(dim=1) (eps 1e-8);
    loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5, z detached."""
    cos = lambda a, b: np.sum(a * b, 1) / np.maximum(  # noqa: E731
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-8)
    return -(cos(p1, z2).mean() + cos(p2, z1).mean()) * 0.5


def test_loss_equals_the_reference_and_no_gradient_reaches_the_targets():
    rng = np.random.default_rng(0)
    p1, p2, z1, z2 = (rng.normal(size=(8, 16)).astype(np.float32) for _ in range(4))
    ours = lambda p1, p2, z1, z2: 0.5 * (negative_cosine(p1, z2)  # noqa: E731
                                         + negative_cosine(p2, z1))
    got = float(ours(p1, p2, z1, z2))
    assert got == pytest.approx(reference_loss(p1, p2, z1, z2), abs=1e-6)   # max diff < 1e-6
    grads = jax.grad(ours, argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
    assert np.all(np.asarray(grads[2]) == 0) and np.all(np.asarray(grads[3]) == 0)
    assert np.abs(np.asarray(grads[0])).max() > 0        # the predictor side learns


# ----------------------------------------------------------------------------- heads

def test_heads_have_the_reference_layers_and_parameter_counts():
    """builder.py with ResNet-50 (prev_dim 2048), dim 2048, pred_dim 512: projector
    Linear(2048,2048,no bias) BN ReLU Linear(2048,2048,no bias) BN ReLU fc(2048,2048; its bias
    frozen and cancelled by) BN(2048, affine=False); predictor Linear(2048,512,no bias) BN ReLU
    Linear(512,2048). Trainable counts: the projector 3 x 2048^2 + 2 x 2 x 2048 (fc's frozen
    bias is not trained), the predictor 2048*512 + 2*512 + 512*2048 + 2048."""
    c = load_config("simsiam.py", "imagenet_100ep")
    projector, predictor = build_heads(c, num_features=2048)
    count = lambda m, d: sum(  # noqa: E731
        x.size for x in jax.tree.leaves(jax.eval_shape(
            lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((4, d)), train=True))["params"]))
    assert count(projector, 2048) == 3 * 2048 ** 2 + 2 * 2 * 2048
    assert count(predictor, 2048) == 2048 * 512 + 2 * 512 + 512 * 2048 + 2048
    out = projector.init_with_output(jax.random.PRNGKey(0), jnp.ones((4, 2048)) *
                                     jnp.arange(4.0)[:, None], train=True,
                                     mutable=["params", "batch_stats"])[0]
    np.testing.assert_allclose(np.asarray(out).mean(0), 0.0, atol=1e-5)   # BN, no affine


# ----------------------------------------------------------------------------- presets

def test_imagenet_preset_is_the_readme_command():
    c = load_config("simsiam.py", "imagenet_100ep")
    assert c.method == "simsiam" and c.simsiam.fix_pred_lr                  # --fix-pred-lr
    assert (c.model.name, c.model.depth, c.model.stem) == ("resnet", 50, "imagenet")
    assert (c.model.conv_init, c.model.zero_init_residual) == ("torchvision", True)
    assert c.model.get("bn_group_size") is None                             # SyncBN
    assert (c.head.num_layers, c.head.hidden_dim, c.head.out_dim) == (3, 0, 2048)   # --dim
    assert c.predictor.hidden_dim == 512                                    # --pred-dim
    assert c.batch_size == 512 and c.num_epochs == 100                      # -b 512, --epochs
    assert c.optimizer.base_lr == 0.05 and c.optimizer.lr_scaling == "linear"  # lr x B/256
    assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay) == (
        "sgd", 0.9, 1e-4)
    assert c.optimizer.decay_all and not c.optimizer.nesterov
    assert c.lr_schedule == "cosine_per_epoch" and c.warmup_epochs == 0    # per-epoch cosine
    # RandomResizedCrop(224, scale=(0.2, 1.)), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
    # RandomGrayscale(0.2), GaussianBlur([.1, 2.]) p 0.5, flip, ImageNet mean/std.
    assert c.dataset.image_size == 224
    want = aug_presets.moco_v2().to_dict()
    assert c.aug.view1.to_dict() == c.aug.view2.to_dict() == want
    assert (want["crop_area_min"], want["brightness"], want["hue"], want["jitter_prob"],
            want["grayscale_prob"], want["blur_prob"], want["blur_sigma_min"],
            want["blur_sigma_max"], want["normalize"]) == (
        0.2, 0.4, 0.1, 0.8, 0.2, 0.5, 0.1, 2.0, "imagenet")


def test_cifar10_preset_is_the_paper_appendix():
    c = load_config("simsiam.py", "cifar10")
    assert (c.model.depth, c.model.stem, c.dataset.image_size) == (18, "cifar", 32)
    assert c.head.num_layers == 2 and c.aug.view1.blur_prob == 0.0
    assert (c.optimizer.base_lr, c.optimizer.weight_decay, c.optimizer.momentum) == (
        0.03, 5e-4, 0.9)
    assert c.batch_size == 512 and c.num_epochs == 800


# ----------------------------------------------------------------------------- parameter groups

def torch_sgd(params, grads_seq, lr_of, groups, wd=1e-4, momentum=0.9):
    """PyTorch SGD (weight decay into the gradient, buffer = d_p at its first step, then
    m * buf + d_p; p -= lr * buf) with param groups: group g's LR at step t is lr_of(g, t); a
    parameter whose gradient is None at a step (frozen) is skipped, its buffer untouched."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    buf = {}
    for t, grads in enumerate(grads_seq):
        for k in params:
            g = groups[k]
            if g.get("frozen_until", 0) > t:
                continue
            d = grads[k] + wd * params[k]
            buf[k] = d if k not in buf else momentum * buf[k] + d
            params[k] -= lr_of(g, t) * buf[k]
    return params


def test_fixed_lr_and_frozen_until_groups_equal_pytorch_sgd_param_groups():
    """SimSiam's --fix-pred-lr (the predictor at the peak LR while the rest decays) and SwAV's
    frozen-for-N-steps prototypes (grad None: no update, no momentum, no weight decay)."""
    rng = np.random.default_rng(0)
    shapes = {"backbone": (3, 4), "predictor": (4, 2), "prototypes": (2, 5)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads_seq = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
                 for _ in range(6)]
    peak, total = 0.5, 6
    schedule = optim.warmup_cosine_schedule(peak, total, warmup_steps=0)
    cfg = ml_collections.ConfigDict(dict(name="sgd", weight_decay=1e-4, momentum=0.9,
                                         decay_all=True))
    groups = (ParamGroup(("predictor",), fixed_lr=True),
              ParamGroup(("prototypes",), frozen_until_step=3))
    tx = optim.make_optimizer(cfg, schedule, groups=groups, peak_lr=peak)
    p = {k: jnp.asarray(v[None]) for k, v in params.items()}   # leaves [1, ...]: ndim > 1
    state = tx.init(p)
    for g in grads_seq:
        u, state = tx.update({k: jnp.asarray(v[None]) for k, v in g.items()}, state, p)
        p = optax.apply_updates(p, u)
    cosine = lambda t: 0.5 * peak * (1 + math.cos(math.pi * t / total))  # noqa: E731
    want = torch_sgd(params, grads_seq,
                     lambda g, t: peak if g.get("fixed") else cosine(t),
                     {"backbone": {}, "predictor": {"fixed": True},
                      "prototypes": {"frozen_until": 3}})
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k])[0], want[k], rtol=2e-5, atol=1e-6,
                                   err_msg=k)


def test_frozen_forever_group_never_moves():
    cfg = ml_collections.ConfigDict(dict(name="sgd", weight_decay=0.1, momentum=0.9))
    tx = optim.make_optimizer(cfg, 0.1, groups=(ParamGroup(("a",), frozen_until_step=FOREVER),))
    p = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
    u, _ = tx.update({"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}, tx.init(p), p)
    assert np.all(np.asarray(u["a"]) == 0) and np.all(np.asarray(u["b"]) != 0)


def test_simsiam_declares_its_predictor_at_a_fixed_lr():
    c = tiny("simsiam.py", "cifar10")
    groups = get_method("simsiam").param_groups(c, train.make_context(c, 1000))
    assert ParamGroup(("predictor",), fixed_lr=True) in groups
    c.unlock()
    c.simsiam.fix_pred_lr = False
    groups = get_method("simsiam").param_groups(c, train.make_context(c, 1000))
    assert not any(g.fixed_lr for g in groups)
