"""Models: BN (global / grouped) against numpy, ResNet sizes against torchvision and the SimCLRv2
paper, zero-init residual blocks, output shapes, BN state updates, and head structures.

Large models are only traced (`jax.eval_shape`), never run; real forward passes use width 1/8
and 32 px images. Init keys use the "rbg" PRNG, which compiles much faster on CPU than threefry.
"""
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax.models import build_backbone, heads
from simclr_jax.models.norm import BatchNorm
from simclr_jax.models.resnet import BasicBlock, BottleneckBlock, ResNet

TINY = 0.125


def _key(seed=0):
    return jax.random.key(seed, impl="rbg")


def _num_params(module, image_size=224):
    """Parameter count (params only, no batch_stats) without running anything."""
    variables = jax.eval_shape(
        lambda: module.init(_key(), jnp.zeros((2, image_size, image_size, 3)), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("depth, expected", [(18, 11_176_512), (50, 23_508_032)])
def test_backbone_param_counts_equal_torchvision(depth, expected):
    # torchvision resnet18 / resnet50 total (11,689,512 / 25,557,032) minus fc (512*1000+1000 /
    # 2048*1000+1000).
    assert _num_params(ResNet(depth=depth, stem="imagenet")) == expected


def _resnet_params_by_formula(stages, bottleneck: bool) -> int:
    """Plain count of a ResNet's conv weights + BN (scale, bias), torchvision layout (ImageNet
    stem, no biases in convs, projection shortcut when the shape changes)."""
    conv = lambda k, cin, cout: k * k * cin * cout
    bn = lambda c: 2 * c
    total = conv(7, 3, 64) + bn(64)
    cin = 64
    for stage, (blocks, width) in enumerate(zip(stages, (64, 128, 256, 512))):
        for b in range(blocks):
            stride = 2 if (stage > 0 and b == 0) else 1
            cout = width * 4 if bottleneck else width
            if bottleneck:
                total += (conv(1, cin, width) + bn(width) + conv(3, width, width) + bn(width)
                          + conv(1, width, cout) + bn(cout))
            else:
                total += conv(3, cin, width) + bn(width) + conv(3, width, width) + bn(width)
            if stride != 1 or cin != cout:
                total += conv(1, cin, cout) + bn(cout)
            cin = cout
    return total


@pytest.mark.parametrize("depth, stages, bottleneck", [
    (18, (2, 2, 2, 2), False), (50, (3, 4, 6, 3), True),     # the formula itself, vs torchvision
    (10, (1, 1, 1, 1), False), (14, (1, 1, 1, 1), True), (26, (2, 2, 2, 2), True)])
def test_backbone_param_counts_equal_plain_formula(depth, stages, bottleneck):
    assert _num_params(ResNet(depth=depth, stem="imagenet")) == \
        _resnet_params_by_formula(stages, bottleneck)


@pytest.mark.parametrize("depth, width, sk, published_m", [
    (50, 1, 0.0, 24), (50, 2, 0.0, 94), (50, 1, 0.0625, 35),
    (101, 1, 0.0625, 65), (152, 3, 0.0625, 795)])
def test_backbone_sizes_match_simclr_v2_table(depth, width, sk, published_m):
    """SimCLRv2 (Chen et al. 2020, Table 1) parameter counts, in millions, rounded.

    The published figures are backbone-only: R50-1x is 23.5M, and adding the 3-layer head
    (2 x 2048x2048 + 2048x128 kernels + BN, ~8.7M) would give 32M, not the published 24M.
    So we compare the backbone alone, to the published rounding: [P - 0.5M, P + 0.5M).
    """
    n = _num_params(ResNet(depth=depth, width_multiplier=width, sk_ratio=sk))
    assert published_m - 0.5 <= n / 1e6 < published_m + 0.5, n
    if (depth, width, sk) == (50, 1, 0.0):   # the head is NOT part of the published figure
        head = heads.simclr_projector(num_layers=3, hidden_dim=2048, out_dim=128)
        head_vars = jax.eval_shape(lambda: head.init(_key(), jnp.zeros((2, 2048)), train=False))
        n_head = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(head_vars["params"]))
        assert round((n + n_head) / 1e6) == 32


# ----------------------------------------------------------------------------- BatchNorm

def _np_bn(x, scale, bias, group, eps=1e-5):
    """Reference: loop over groups of consecutive examples, biased variance per group."""
    b, c = x.shape[0], x.shape[-1]
    group = group or b
    out, means, variances = np.empty_like(x), [], []
    for start in range(0, b, group):
        xs = x[start:start + group]
        flat = xs.reshape(-1, c)
        m, v = flat.mean(0), flat.var(0)
        out[start:start + group] = (xs - m) / np.sqrt(v + eps) * scale + bias
        means.append(m)
        variances.append(v)
    return out, np.mean(means, 0), np.mean(variances, 0)


@pytest.mark.parametrize("group", [None, 4])
@pytest.mark.parametrize("shape", [(8, 3, 3, 5), (8, 5)])
def test_batchnorm_matches_numpy(group, shape):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    scale = rng.normal(size=shape[-1]).astype(np.float32)
    bias = rng.normal(size=shape[-1]).astype(np.float32)
    bn = BatchNorm(group_size=group)
    variables = bn.init(_key(), x, use_running_average=False)
    assert set(variables["params"]) == {"scale", "bias"}
    assert set(variables["batch_stats"]) == {"mean", "var"}
    variables = {"params": {"scale": scale, "bias": bias},
                 "batch_stats": variables["batch_stats"]}          # init: mean 0, var 1

    y, upd = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    ref, m, v = _np_bn(x, scale, bias, group)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.9 * 0 + 0.1 * m, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 * 1 + 0.1 * v, rtol=1e-5)

    # Eval mode normalises with the running statistics and leaves them alone.
    stats = upd["batch_stats"]
    y_eval, upd2 = bn.apply({"params": variables["params"], "batch_stats": stats}, x,
                            use_running_average=True, mutable=["batch_stats"])
    ra_m, ra_v = np.asarray(stats["mean"]), np.asarray(stats["var"])
    np.testing.assert_allclose(y_eval, (x - ra_m) / np.sqrt(ra_v + 1e-5) * scale + bias,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(upd2["batch_stats"]["mean"], stats["mean"])


def test_batchnorm_flags_and_bf16():
    x = jnp.ones((4, 3), jnp.bfloat16)
    v = BatchNorm(use_scale=False, use_bias=False).init(_key(), x, use_running_average=False)
    assert "params" not in v
    bn = BatchNorm(use_bias=False, scale_init=jax.nn.initializers.zeros)
    v = bn.init(_key(), x, use_running_average=False)
    assert set(v["params"]) == {"scale"} and float(jnp.abs(v["params"]["scale"]).sum()) == 0
    y = bn.apply(v, x, use_running_average=True)
    assert y.dtype == jnp.bfloat16 and v["params"]["scale"].dtype == jnp.float32


@pytest.mark.parametrize("bad", [3, 0, -2])
def test_batchnorm_bad_group_size(bad):
    x = jnp.ones((8, 4))
    with pytest.raises(ValueError, match="bn_group_size"):
        BatchNorm(group_size=bad).init(_key(), x, use_running_average=False)


@pytest.mark.parametrize("group", [None, 2])
def test_batchnorm_sharded_batch_uses_global_or_group_statistics(group):
    """Batch sharded over 8 devices under jit: global BN needs no axis_name; groups stay exact."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(16, 2, 2, 3)) * 2 + 0.5).astype(np.float32)
    bn = BatchNorm(group_size=group)
    variables = bn.init(_key(), x, use_running_average=False)
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    step = jax.jit(partial(bn.apply, use_running_average=False, mutable=["batch_stats"]))
    y, upd = step(variables, xs)
    ref, m, v = _np_bn(x, np.ones(3, np.float32), np.zeros(3, np.float32), group)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * v, rtol=1e-5)


# ----------------------------------------------------------------------------- ResNet

@pytest.fixture(scope="module")
def tiny_models():
    """Real initialisations of two tiny ResNets (basic + bottleneck blocks), built once."""
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 32, 32, 3)), jnp.float32)
    out = {}
    for depth, stem in [(18, "cifar"), (50, "imagenet")]:
        model = ResNet(depth=depth, width_multiplier=TINY, stem=stem)
        out[depth] = (model, model.init(_key(), x, train=False), x)
    return out


def _blocks(params):
    return {k: v for k, v in params.items() if k.startswith("stage")}


@pytest.mark.parametrize("depth, n_blocks", [(18, 8), (50, 16)])
def test_last_bn_of_every_block_starts_at_zero(tiny_models, depth, n_blocks):
    _, variables, _ = tiny_models[depth]
    blocks = _blocks(variables["params"])
    assert len(blocks) == n_blocks
    last = "bn3" if depth >= 50 else "bn2"
    for name, block in blocks.items():
        np.testing.assert_array_equal(block[last]["scale"], 0.0, err_msg=name)
        np.testing.assert_array_equal(block["bn1"]["scale"], 1.0, err_msg=name)
        if "shortcut" in block:
            np.testing.assert_array_equal(block["shortcut"]["bn"]["scale"], 1.0)


@pytest.mark.parametrize("block", [BasicBlock(16, 1, BatchNorm),
                                   BottleneckBlock(4, 1, BatchNorm)])
def test_block_starts_as_identity(block):
    """With a zero last-BN scale the residual branch adds 0: relu(x + 0) == x for x >= 0."""
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(4, 5, 5, 16)), jnp.float32)
    variables = block.init(_key(), x, train=False)
    assert "shortcut" not in variables["params"]              # same shape: identity shortcut
    y, _ = block.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, x, atol=1e-6)


def _stride_of(stem):
    return 32 if stem == "imagenet" else 8


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_output_shapes_both_stems(depth, stem):
    model = ResNet(depth=depth, width_multiplier=TINY, stem=stem)
    expected_c = int(512 * TINY) * (4 if depth >= 50 else 1)
    assert model.num_features == expected_c
    x = jnp.zeros((3, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(_key(), x, train=False))
    feats = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert feats.shape == (3, expected_c) and feats.dtype == jnp.float32
    # The stem decides the spatial size reaching stage 4: 32 px / 32 = 1 (ImageNet), / 8 = 4.
    _, state = jax.eval_shape(
        lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                              mutable=["intermediates"]), variables)
    last = max(k for k in state["intermediates"] if k.startswith("stage4"))
    spatial = state["intermediates"][last]["__call__"][0].shape[1]
    assert spatial == 32 // _stride_of(stem)
    stem_convs = {k for k in variables["params"] if k.startswith("stem_conv")}
    assert stem_convs == {"stem_conv"}
    k = variables["params"]["stem_conv"]["kernel"].shape[0]
    assert k == (7 if stem == "imagenet" else 3)


def test_train_mode_updates_batch_stats_eval_mode_does_not(tiny_models):
    for model, variables, x in tiny_models.values():
        feats, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert feats.shape == (4, model.num_features) and bool(jnp.all(jnp.isfinite(feats)))
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                               variables["batch_stats"], upd["batch_stats"])
        assert all(jax.tree.leaves(changed))        # every BN saw data and moved its stats
        _, upd_eval = model.apply(variables, x, train=False, mutable=["batch_stats"])
        same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                            variables["batch_stats"], upd_eval["batch_stats"])
        assert all(jax.tree.leaves(same))


def test_selective_kernel_and_resnet_d_structure():
    model = ResNet(depth=50, width_multiplier=TINY, stem="imagenet", sk_ratio=0.0625)
    x = jnp.zeros((2, 32, 32, 3))
    params = jax.eval_shape(lambda: model.init(_key(), x, train=False))["params"]
    # ResNet-D stem: 3x3/2 (32w) -> 3x3 (32w) -> 3x3 (64w).
    assert [params[f"stem_conv{i}"]["kernel"].shape for i in (0, 1)] == [(3, 3, 3, 4),
                                                                          (3, 3, 4, 4)]
    assert params["stem_conv"]["kernel"].shape == (3, 3, 4, 8)
    block = params["stage2_block1"]                    # filters 16 (128 / 8), stride 2
    assert "conv2" not in block and block["sk"]["conv"]["kernel"].shape == (3, 3, 16, 32)
    assert block["sk"]["squeeze_conv"]["kernel"].shape == (1, 1, 16, 32)   # max(16/16, 32)
    assert block["sk"]["mix_conv"]["kernel"].shape == (1, 1, 32, 32)
    # ResNet-D shortcut: average pool then a stride-1 1x1 conv.
    assert block["shortcut"]["conv"]["kernel"].shape == (1, 1, 32, 64)
    feats = jax.eval_shape(lambda: model.init_with_output(_key(), x, train=False)[0])
    assert feats.shape == (2, 256)


def test_bfloat16_compute_keeps_float32_params_and_features():
    model = ResNet(depth=18, width_multiplier=TINY, stem="cifar", dtype=jnp.bfloat16)
    x = jnp.zeros((2, 16, 16, 3))
    feats, variables = jax.eval_shape(lambda: model.init_with_output(_key(), x, train=True))
    assert feats.dtype == jnp.float32
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_invalid_resnet_config():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="stem"):
        ResNet(depth=18, stem="tiny")


# ----------------------------------------------------------------------------- build_backbone

def test_build_backbone():
    cfg = ml_collections.ConfigDict(dict(name="resnet", depth=50, width=2.0, stem="cifar",
                                         sk_ratio=0.0))            # no bn_group_size field
    model = build_backbone(cfg)
    assert isinstance(model, ResNet) and model.bn_group_size is None
    assert (model.depth, model.width_multiplier, model.stem) == (50, 2.0, "cifar")
    assert model.num_features == 4096
    cfg.name = "vgg"
    with pytest.raises(ValueError, match="resnet"):
        build_backbone(cfg)


# ----------------------------------------------------------------------------- heads

def _head_params(head, in_dim=6):
    v = jax.eval_shape(lambda: head.init(_key(), jnp.zeros((4, in_dim)), train=False))
    return jax.tree.map(lambda a: a.shape, v["params"])


def test_head_presets_structure():
    # SimCLR v2: Dense(no bias)->BN->ReLU x2, Dense(no bias)->BN(scale, no bias).
    p = _head_params(heads.simclr_projector(num_layers=3, hidden_dim=8, out_dim=5))
    assert p == {"dense0": {"kernel": (6, 8)}, "bn0": {"scale": (8,), "bias": (8,)},
                 "dense1": {"kernel": (8, 8)}, "bn1": {"scale": (8,), "bias": (8,)},
                 "dense2": {"kernel": (8, 5)}, "bn2": {"scale": (5,)}}
    assert _head_params(heads.moco_v1_head(out_dim=5)) == {
        "dense0": {"kernel": (6, 5), "bias": (5,)}}
    assert _head_params(heads.moco_v2_head(hidden_dim=8, out_dim=5)) == {
        "dense0": {"kernel": (6, 8), "bias": (8,)}, "dense1": {"kernel": (8, 5), "bias": (5,)}}
    # MoCo v3 (ResNet): last BN without affine -> it owns batch_stats but no params.
    assert _head_params(heads.moco_v3_projector(hidden_dim=8, out_dim=5)) == {
        "dense0": {"kernel": (6, 8)}, "bn0": {"scale": (8,), "bias": (8,)},
        "dense1": {"kernel": (8, 5)}}
    proj = heads.moco_v3_projector(hidden_dim=8, out_dim=5)
    stats = jax.eval_shape(lambda: proj.init(_key(), jnp.zeros((4, 6)), train=False))
    assert set(stats["batch_stats"]) == {"bn0", "bn1"}
    pred_resnet = heads.moco_v3_predictor(hidden_dim=8, out_dim=5)
    pred_vit = heads.moco_v3_predictor(hidden_dim=8, out_dim=5, last_bn=True)
    for pred, bns in [(pred_resnet, {"bn0"}), (pred_vit, {"bn0", "bn1"})]:
        v = jax.eval_shape(lambda: pred.init(_key(), jnp.zeros((4, 6)), train=False))
        assert set(v["batch_stats"]) == bns and "bn1" not in v["params"]
    # BYOL: Linear(bias)->BN->ReLU->Linear(no bias), no last BN.
    for head in (heads.byol_projector(hidden_dim=8, out_dim=5),
                 heads.byol_predictor(hidden_dim=8, out_dim=5)):
        assert _head_params(head) == {"dense0": {"kernel": (6, 8), "bias": (8,)},
                                      "bn0": {"scale": (8,), "bias": (8,)},
                                      "dense1": {"kernel": (8, 5)}}
    # The general MLPHead: BN on the hidden layer only when asked, bias per flag.
    assert _head_params(heads.MLPHead(hidden_dims=(8,), out_dim=3, use_bn=False,
                                      use_bias=False, last_use_bias=True, last_bn=False)) == {
        "dense0": {"kernel": (6, 8)}, "dense1": {"kernel": (8, 3), "bias": (3,)}}


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_head_return_all(num_layers):
    head = heads.simclr_projector(num_layers=num_layers, hidden_dim=8, out_dim=5,
                                  bn_group_size=2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6)), jnp.float32)
    variables = head.init(_key(), x, train=False)
    outs, _ = head.apply(variables, x, train=True, return_all=True, mutable=["batch_stats"])
    assert len(outs) == num_layers + 1
    assert [o.shape for o in outs] == [(4, 6)] + [(4, 8)] * (num_layers - 1) + [(4, 5)]
    np.testing.assert_array_equal(outs[0], x)
    for h in outs[1:-1]:
        assert bool(jnp.all(h >= 0))                      # hidden outputs are post-ReLU
    single, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(single, outs[-1])


def test_linear_head():
    head = heads.LinearHead(num_classes=3)
    v = head.init(_key(), jnp.zeros((2, 6)))
    assert jax.tree.map(lambda a: a.shape, v["params"]) == {
        "dense": {"kernel": (6, 3), "bias": (3,)}}
    with pytest.raises(ValueError, match="num_layers"):
        heads.simclr_projector(num_layers=0)


# ----------------------------------------------------------------------------- reference variants

@pytest.mark.parametrize("depth, stem, shortcut, expected", [
    # SimCLR tf2 resnet.py (use_projection=True on every stage's first block), CIFAR stem:
    (18, "cifar", "first_block_of_stage", 11_173_056),
    (18, "cifar", "on_shape_change", 11_168_832),             # torchvision layout, CIFAR stem
    (50, "imagenet", "first_block_of_stage", 23_508_032),     # bottlenecks always projected
])
def test_shortcut_projection_param_counts_equal_official(depth, stem, shortcut, expected):
    assert _num_params(ResNet(depth=depth, stem=stem, shortcut=shortcut), image_size=32) == \
        expected


def test_simclr_shortcut_projects_stage_one_of_basic_block_nets_only():
    model = ResNet(depth=34, width_multiplier=TINY, stem="cifar", shortcut="first_block_of_stage")
    params = jax.eval_shape(lambda: model.init(_key(), jnp.zeros((2, 16, 16, 3)),
                                               train=False))["params"]
    projected = sorted(k for k, v in params.items() if k.startswith("stage") and "shortcut" in v)
    assert projected == ["stage1_block1", "stage2_block1", "stage3_block1", "stage4_block1"]


def _np_max_pool_3x3_s2(x, pad_lo, pad_hi):
    """Reference: explicit -inf padding, then the max over every 3x3 window at stride 2."""
    h = x.shape[1]
    xp = np.pad(x, ((0, 0), (pad_lo, pad_hi), (pad_lo, pad_hi), (0, 0)),
                constant_values=-np.inf)
    out = (h + pad_lo + pad_hi - 3) // 2 + 1
    return np.stack([np.stack([xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                               for j in range(out)], 1) for i in range(out)], 1)


@pytest.mark.parametrize("size", [8, 7])
def test_stem_max_pool_padding_matches_torch_and_tf_same(size):
    from simclr_jax.models.resnet import stem_max_pool
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    # torch.nn.MaxPool2d(3, 2, padding=1); TF SAME: out = ceil(H/2), pad = 2(out-1) + 3 - H.
    out = -(-size // 2)
    total = max(2 * (out - 1) + 3 - size, 0)
    np.testing.assert_array_equal(stem_max_pool(jnp.asarray(x), "torch"),
                                  _np_max_pool_3x3_s2(x, 1, 1))
    np.testing.assert_array_equal(stem_max_pool(jnp.asarray(x), "same"),
                                  _np_max_pool_3x3_s2(x, total // 2, total - total // 2))
    if size % 2 == 0:     # even sizes: TF pads (0, 1), torch (1, 1): the windows differ
        assert not np.array_equal(stem_max_pool(jnp.asarray(x), "same"),
                                  stem_max_pool(jnp.asarray(x), "torch"))


def test_torchvision_init_kaiming_fan_out_and_no_zero_init():
    """MoCo's torchvision ResNets: conv weights N(0, 2 / fan_out) with fan_out = k*k*C_out,
    every BN scale 1 (zero_init_residual=False, MoCo v1/v2)."""
    def init(model):
        return jax.jit(lambda: model.init(_key(), jnp.zeros((2, 8, 8, 3)), train=False))()

    c = 128                                                   # stage 4 at width 1/4
    params = init(ResNet(depth=18, width_multiplier=0.25, stem="cifar", conv_init="torchvision",
                         zero_init_residual=False))["params"]
    kernel = np.asarray(params["stage4_block2"]["conv2"]["kernel"])         # [3, 3, c, c]
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / (9 * c)), rel=0.01)
    assert abs(kernel.mean()) < 0.01 * kernel.std()
    assert np.abs(kernel).max() > 4 * kernel.std()           # a plain normal, not truncated at 2σ
    for name, block in _blocks(params).items():
        np.testing.assert_array_equal(block["bn2"]["scale"], 1.0, err_msg=name)
    simclr = init(ResNet(depth=18, width_multiplier=0.25, stem="cifar"))["params"]
    kernel = np.asarray(simclr["stage4_block2"]["conv2"]["kernel"])
    # SimCLR tf2 VarianceScaling(): truncated normal with variance 1 / fan_in (fan_in = 9c too)
    assert kernel.std() == pytest.approx(np.sqrt(1.0 / (9 * c)), rel=0.02)


def test_resnet_variant_errors():
    for field in ("shortcut", "stem_pool_padding", "conv_init"):
        with pytest.raises(ValueError, match=field):
            ResNet(depth=18, **{field: "bogus"})
