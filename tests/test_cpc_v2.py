"""CPC v2 (Henaff et al. 2020; no official code): the patch grid, per-patch augmentation, the
masked context network's causality in every direction, the InfoNCE over the global batch
against numpy transcriptions of the paper's pseudo-code, layer norm in the encoder, the
evaluation encoder and the presets' values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import load_config, tiny

from simclr_jax import losses
from simclr_jax.data.patch_grid import augment_patches, grid_size, patch_grid
from simclr_jax.errors import UserError
from simclr_jax.methods import get_method
from simclr_jax.methods.cpc_v2 import PatchPredictionNetwork
from simclr_jax.models import ResNet
from simclr_jax.models.masked_context import DIRECTIONS, orient


# ----------------------------------------------------------------------------- patch grid

def numpy_patch_grid(images, p, stride):
    """Transcription: patch (i, j) = images[:, i*stride : i*stride+p, j*stride : j*stride+p]."""
    b, s = images.shape[:2]
    g = (s - p) // stride + 1
    out = np.zeros((b, g, g, p, p, images.shape[-1]), images.dtype)
    for i in range(g):
        for j in range(g):
            out[:, i, j] = images[:, i * stride:i * stride + p, j * stride:j * stride + p]
    return out


def test_patch_grid_equals_a_numpy_transcription_and_patches_overlap():
    images = np.random.default_rng(0).uniform(size=(2, 20, 20, 3)).astype(np.float32)
    got = np.asarray(patch_grid(jnp.asarray(images), 8, 4))
    assert got.shape == (2, 4, 4, 8, 8, 3)                               # (20 - 8) / 4 + 1
    np.testing.assert_array_equal(got, numpy_patch_grid(images, 8, 4))
    np.testing.assert_array_equal(got[:, 1, 2, :, 4:], got[:, 1, 3, :, :4])   # half overlap
    np.testing.assert_array_equal(got[:, 1, 2, 4:], got[:, 2, 2, :4])
    # The paper's grid: 7 x 7 patches of 64 px with stride 32 from a 256 px crop.
    shape = jax.eval_shape(lambda x: patch_grid(x, 64, 32), jnp.zeros((1, 256, 256, 3))).shape
    assert shape == (1, 7, 7, 64, 64, 3) and grid_size(32, 8, 4) == 7
    with pytest.raises(UserError, match="must be a multiple of stride"):
        grid_size(32, 8, 5)


def test_patch_augmentation_flips_and_drops_colours_per_patch():
    patches = jnp.asarray(np.random.default_rng(1).uniform(
        0.5, 1.0, size=(4, 3, 3, 4, 4, 3)).astype(np.float32))
    rng = jax.random.PRNGKey(0)
    same = augment_patches(rng, patches, flip_prob=0.0, color_drop_prob=0.0)
    np.testing.assert_array_equal(same, patches)
    flipped = augment_patches(rng, patches, flip_prob=1.0, color_drop_prob=0.0)
    np.testing.assert_array_equal(flipped, patches[..., :, ::-1, :])
    dropped = np.asarray(augment_patches(rng, patches, flip_prob=0.0, color_drop_prob=1.0))
    kept = (np.abs(dropped).reshape(4, 3, 3, -1, 3).max(axis=3) > 0)     # [B, G, G, 3]
    assert np.all(kept.sum(-1) == 1)                                     # 2 of 3 channels gone
    kept_channel = kept.argmax(-1)
    assert len(np.unique(kept_channel)) == 3                            # drawn per patch
    np.testing.assert_array_equal(                                       # the kept one intact
        np.take_along_axis(dropped, kept_channel[..., None, None, None], -1),
        np.take_along_axis(np.asarray(patches), kept_channel[..., None, None, None], -1))
    half = np.asarray(augment_patches(rng, patches, flip_prob=0.5, color_drop_prob=0.0))
    was_flipped = np.all(half == np.asarray(patches)[..., :, ::-1, :], axis=(3, 4, 5))
    per_image = was_flipped.reshape(4, -1).mean(1)                       # [B]
    assert np.any((per_image > 0) & (per_image < 1))                    # per patch, not image


# ----------------------------------------------------------------------------- context network

# Where row r / column j of a direction's turned grid lies in the image's grid (G rows), and
# the image positions its context at (r, j) must NOT see: a transcription of the directions.
def original_position(direction, r, j, g):
    return {"top_down": (r, j), "bottom_up": (g - 1 - r, j), "left_right": (j, r),
            "right_left": (j, g - 1 - r)}[direction]


def unseen(direction, r, g):
    """[G, G] bool: the image positions the context of turned row r must not depend on."""
    rows, cols = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    return {"top_down": rows > r, "bottom_up": rows < g - 1 - r, "left_right": cols > r,
            "right_left": cols < g - 1 - r}[direction]


def small_network(directions=DIRECTIONS, steps=(1, 2)):
    encoder = ResNet(depth=10, width_multiplier=0.125, stem="cifar", norm="layer")
    from simclr_jax.models.patch_encoder import PatchGridEncoder
    return PatchPredictionNetwork(backbone=PatchGridEncoder(encoder, 8, 4),
                                  directions=tuple(directions), steps=steps, context_blocks=2,
                                  context_width=8, target_dim=6, emb_scale=0.1)


def test_orient_turns_the_grid_as_each_direction_reads():
    g = 4
    z = jnp.arange(g * g, dtype=jnp.float32).reshape(1, g, g, 1)
    for d in DIRECTIONS:
        turned = np.asarray(orient(z, d))
        for r in range(g):
            for j in range(g):
                at = (0,) + original_position(d, r, j, g) + (0,)
                assert turned[0, r, j, 0] == z[at], (d, r, j)


def test_context_network_cannot_see_what_it_predicts_in_any_direction():
    """The prediction made from (turned) row r for row r + k has zero gradient with respect to
    every patch feature the direction has not reached yet (below row r for top-down, above
    for bottom-up, right of column r for left-right, left of it for right-left)."""
    g, dim = 5, 8
    net = small_network()
    z = jax.random.normal(jax.random.PRNGKey(0), (2, g, g, dim))
    params = net.init(jax.random.PRNGKey(1), z, method=PatchPredictionNetwork.predictions)

    def all_predictions(z):
        _, preds = net.apply(params, z, method=PatchPredictionNetwork.predictions)
        return preds                                                      # {k: [R, B, G, G, T]}

    jac = jax.jit(jax.jacrev(all_predictions))(z)          # {k: [R, B, G, G, T, B, G, G, D]}
    for d in DIRECTIONS:
        for k in (1, 2):
            for r in range(g - k):
                # d pred[r, j=2] of image 0 / d z, summed over the target dims: [B, G, G, D]
                gz = np.abs(np.asarray(jac[k][DIRECTIONS.index(d), 0, r, 2])).sum(0)
                hidden = unseen(d, r, g)
                assert np.all(gz[0][hidden] == 0), (d, k, r)
                assert gz[0][~hidden].sum() > 0, (d, k, r)               # it sees the rest
                assert np.all(gz[1] == 0)                                 # nor other images


# ----------------------------------------------------------------------------- loss

def numpy_grid_infonce(preds, targets, step):
    """The paper's pseudo-code (appendix): targets flattened over (b, row, col) of the whole
    batch; logits = preds[:, :-step] @ targets^T; label = b*H*W + (r+step)*W + j; mean CE."""
    b, h, w, d = targets.shape
    keys = targets.reshape(-1, d).astype(np.float64)
    losses_ = []
    for bi in range(b):
        for r in range(h - step):
            for j in range(w):
                logits = keys @ preds[bi, r, j].astype(np.float64)
                label = bi * h * w + (r + step) * w + j
                m = logits.max()
                losses_.append(m + np.log(np.exp(logits - m).sum()) - logits[label])
    return float(np.mean(losses_))


def test_grid_infonce_equals_the_papers_pseudo_code_over_the_global_batch():
    rng = np.random.default_rng(0)
    preds, targets = (rng.normal(size=(3, 5, 4, 6)).astype(np.float32) for _ in range(2))
    for step in (1, 2, 4):
        got, _ = losses.grid_prediction_infonce(jnp.asarray(preds), jnp.asarray(targets), step)
        assert float(got) == pytest.approx(numpy_grid_infonce(preds, targets, step), rel=1e-5)
    # Negatives include the other images' patches: changing image 2 changes image 0's loss.
    other = targets.copy()
    other[2] += 1.0
    a = losses.grid_prediction_infonce(jnp.asarray(preds[:1]), jnp.asarray(targets[:1]), 1)[0]
    b = losses.grid_prediction_infonce(jnp.asarray(preds), jnp.asarray(other), 1)[0]
    assert float(a) != pytest.approx(float(b))


# ----------------------------------------------------------------------------- encoder

def test_encoder_uses_layer_norm_and_patches_do_not_see_each_other():
    config = tiny("cpc_v2.py", "cifar10", batch_size=4, image_size=16)
    assert config.model.norm == "layer"
    method = get_method(config.method)
    network = method.build_network(config, num_classes=10)
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
    variables = network.init(jax.random.PRNGKey(1), images, train=True)
    assert not variables.get("batch_stats")                              # no BN anywhere
    names = {"/".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
    assert any("stem_bn/scale" in n for n in names)                       # LN scale per channel

    def z_of(x):
        out = network.apply(variables, x, train=True, mutable=["batch_stats"])[0]
        return np.asarray(out["z"])                                       # [B, G, G, D]

    changed = images.at[:, 12:].set(0.0)   # only the bottom row of patches (rows 8-15) sees it
    za, zb = z_of(images), z_of(changed)
    np.testing.assert_allclose(za[:, :2], zb[:, :2], atol=1e-6)           # training mode too
    assert np.abs(za[:, 2] - zb[:, 2]).max() > 1e-4
    # The evaluation encoder: image -> grid -> ResNet -> mean of the patch features, on the
    # online network's "backbone" subtree.
    spec = method.encoder(config)
    enc_vars = spec.variables({"params": variables["params"], "batch_stats": {}})
    feats = spec.backbone.apply({"params": enc_vars["params"]["backbone"]}, images)
    np.testing.assert_allclose(np.asarray(feats), za.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_resnet_norm_option_is_checked_and_batch_norm_is_the_default():
    assert ResNet(depth=10).norm == "batch"
    with pytest.raises(UserError, match="ResNet norm must be one of"):
        ResNet(depth=10, norm="group")
    x = jnp.zeros((2, 8, 8, 3))
    count = lambda norm: jax.tree.map(  # noqa: E731
        np.shape, jax.eval_shape(lambda: ResNet(depth=10, width_multiplier=0.25, stem="cifar",
                                                norm=norm).init(jax.random.PRNGKey(0), x,
                                                                train=True)))
    bn, ln = count("batch"), count("layer")
    assert bn["params"] == ln["params"] and "batch_stats" not in ln     # same scale/bias names


# ----------------------------------------------------------------------------- presets

def test_imagenet_presets_are_the_papers_recipe():
    for preset, depth in (("imagenet_r50", 50), ("imagenet_r161", 161)):
        c = load_config("cpc_v2.py", preset)
        s = c.cpc_v2
        assert c.method == "cpc_v2" and (c.model.depth, c.model.norm) == (depth, "layer")
        assert (c.dataset.image_size, s.patch_size, s.patch_stride) == (256, 64, 32)
        assert grid_size(256, s.patch_size, s.patch_stride) == 7
        assert (s.min_step, s.max_step) == (1, 5) and tuple(s.directions) == DIRECTIONS
        assert (s.context_blocks, s.context_width, s.target_dim, s.emb_scale) == (5, 256, 64,
                                                                                  0.1)
        assert (s.patch_flip_prob, s.color_drop_prob) == (0.5, 1.0)
        assert (c.optimizer.name, c.optimizer.base_lr, c.batch_size) == ("adamw", 4e-4, 512)
        assert c.optimizer.weight_decay == 0.0 and c.lr_schedule == "constant"
        assert sorted(c.aug.keys()) == ["on_device", "view1"]           # one view


def test_resnet_161_is_the_papers_network():
    """ResNet-101's first three stacks, the third converted to 46 blocks with 512-wide
    bottlenecks and 4096-d outputs: (3, 4, 46) blocks, 3 x 53 + 2 = 161 layers, 4096 features;
    the other depths keep their torchvision parameter counts."""
    from simclr_jax.models.resnet import num_features
    v = jax.eval_shape(lambda: ResNet(depth=161, norm="layer").init(
        jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=True))["params"]
    blocks = [k for k in v if k.startswith("stage")]
    assert len(blocks) == 3 + 4 + 46 and not any(k.startswith("stage4") for k in blocks)
    assert v["stage3_block46"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
    assert v["stage3_block46"]["conv3"]["kernel"].shape == (1, 1, 512, 4096)
    assert v["stage3_block1"]["shortcut"]["conv"]["kernel"].shape == (1, 1, 512, 4096)
    assert num_features(161) == 4096 and num_features(50) == 2048
    # 303.65M parameters; SimCLR's and BYOL's tables list CPC v2's ResNet-161 at 305M.
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v)) == 303_651_904
    count = lambda d: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(  # noqa: E731
        jax.eval_shape(lambda: ResNet(depth=d).init(jax.random.PRNGKey(0),
                                                    jnp.zeros((1, 32, 32, 3)),
                                                    train=True))["params"]))
    assert (count(18), count(50)) == (11_176_512, 23_508_032)


def test_cifar10_preset_scales_the_papers_grid_to_32px():
    c = load_config("cpc_v2.py", "cifar10")
    s = c.cpc_v2
    assert (c.dataset.image_size, s.patch_size, s.patch_stride) == (32, 8, 4)
    assert grid_size(32, 8, 4) == 7 and s.max_step == 5
    assert (c.model.depth, c.model.stem, c.model.norm) == (18, "cifar", "layer")


def test_impossible_settings_are_one_line():
    from simclr_jax import train
    c = tiny("cpc_v2.py", "cifar10", batch_size=4, image_size=16)
    c.unlock()
    method, ctx = get_method(c.method), train.make_context(c, 1000)
    validate_config = lambda c: method.validate(c, ctx)  # noqa: E731   (train.py's check)
    validate_config(c)
    c.cpc_v2.max_step = 3                                                 # 3 x 3 grid at 16 px
    with pytest.raises(UserError, match="3 x 3 patch grid allows"):
        validate_config(c)
    c.cpc_v2.max_step = 2
    c.cpc_v2.directions = ("top_down", "diagonal")
    with pytest.raises(UserError, match="give distinct directions"):
        validate_config(c)
