"""ViT backbone (MoCo v3): parameter counts vs timm, sin-cos embedding, init, forward vs numpy,
frozen patch projection under AdamW, image sizes and errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simclr_jax.models import vit
from simclr_jax.models.vit import ViT, build_2d_sincos_position_embedding, frozen_param_mask


def count(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def abstract_params(model, size):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)["params"]


def init_params(model, size=32, seed=0):
    x = jnp.zeros((2, size, size, 3), jnp.float32)
    return model.init(jax.random.PRNGKey(seed), x, train=False)["params"]


# timm vit_small_patch16_224 (= DeiT-S) has 22,050,664 parameters and vit_base_patch16_224 (=
# torchvision vit_b_16) 86,567,656, both including a 1000-class head (D*1000 + 1000) and a learned
# position embedding (197 x D). Our backbone has neither (head removed, fixed sin-cos embedding).
TIMM_S, TIMM_B = 22_050_664, 86_567_656
EXPECTED_S = TIMM_S - (384 * 1000 + 1000) - 197 * 384      # 21,590,016
EXPECTED_B = TIMM_B - (768 * 1000 + 1000) - 197 * 768      # 85,647,360


def test_expected_counts_arithmetic():
    # Independent per-layer formula: patch conv + cls + depth * (12 D^2 + 13 D) + final LN.
    def formula(d, depth=12, p=16):
        return 3 * p * p * d + d + d + depth * (12 * d * d + 13 * d) + 2 * d
    assert EXPECTED_S == 21_590_016 == formula(384)
    assert EXPECTED_B == 85_647_360 == formula(768)


def test_param_counts_match_timm_without_head_and_pos_embed():
    assert count(abstract_params(vit.vit_small(), 224)) == EXPECTED_S
    assert count(abstract_params(vit.vit_base(), 224)) == EXPECTED_B
    # Heads do not change the count (DeiT-S uses 6, MoCo v3 12); the image size neither, because
    # the position embedding is a constant, not a parameter.
    assert count(abstract_params(ViT(384, 12, 6, 1536), 224)) == EXPECTED_S
    assert count(abstract_params(vit.vit_small(), 64)) == EXPECTED_S


def test_param_tree_has_no_position_embedding():
    params = abstract_params(vit.vit_tiny_test(), 32)
    assert set(params) == {"patch_embed", "cls_token", "norm", "block_0", "block_1"}
    assert params["cls_token"].shape == (1, 1, 32)
    assert params["patch_embed"]["kernel"].shape == (4, 4, 3, 32)


def test_num_features_without_init():
    assert vit.vit_small().num_features == 384
    assert vit.vit_base().num_features == 768
    assert vit.vit_tiny_test().num_features == 32
    assert vit.vit_small().num_heads == 12


def loop_sincos(grid_h, grid_w, dim, temperature=10000.0):
    """Explicit loops: token 1 + r*gw + c gets [sin(r w), cos(r w), sin(c w), cos(c w)]."""
    q = dim // 4
    out = np.zeros((1 + grid_h * grid_w, dim))
    for r in range(grid_h):
        for c in range(grid_w):
            t = 1 + r * grid_w + c
            for k in range(q):
                w = 1.0 / temperature ** (k / q)
                out[t, k] = math.sin(r * w)
                out[t, q + k] = math.cos(r * w)
                out[t, 2 * q + k] = math.sin(c * w)
                out[t, 3 * q + k] = math.cos(c * w)
    return out


def moco_v3_transcription(grid, dim, temperature=10000.0):
    """moco-v3 vits.py build_2d_sincos_position_embedding, line by line in numpy (square grid):
    torch.meshgrid(grid_w, grid_h) is "ij" indexing; sin/cos of w then of h; zero cls row."""
    grid_w, grid_h = np.meshgrid(np.arange(grid, dtype=np.float64),
                                 np.arange(grid, dtype=np.float64), indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (np.arange(pos_dim) / pos_dim)
    out_w = np.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = np.einsum("m,d->md", grid_h.flatten(), omega)
    pos = np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], axis=1)
    return np.concatenate([np.zeros((1, dim)), pos], axis=0)


@pytest.mark.parametrize("grid_h,grid_w,dim", [(4, 4, 16), (3, 5, 8), (14, 14, 384)])
def test_sincos_matches_loop_formula(grid_h, grid_w, dim):
    got = build_2d_sincos_position_embedding(grid_h, grid_w, dim)
    assert got.shape == (1 + grid_h * grid_w, dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, loop_sincos(grid_h, grid_w, dim), atol=1e-6, rtol=0)
    assert np.all(got[0] == 0)


def test_sincos_matches_reference_code_on_square_grid():
    np.testing.assert_allclose(build_2d_sincos_position_embedding(14, 14, 384),
                               moco_v3_transcription(14, 384), atol=1e-6, rtol=0)


def test_sincos_requires_dim_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_2d_sincos_position_embedding(2, 2, 30)


def test_init_follows_moco_v3():
    d, p, m = 64, 8, 128
    params = init_params(ViT(d, 1, 4, m, patch_size=p), size=16)
    blk = params["block_0"]

    def check_uniform(w, bound):
        w = np.asarray(w)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
        np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.05)

    check_uniform(params["patch_embed"]["kernel"], math.sqrt(6 / (3 * p * p + d)))
    for name in ("query", "key", "value", "out"):        # qkv as three separate D x D matrices
        check_uniform(blk["attn"][name]["kernel"], math.sqrt(6 / (d + d)))
    check_uniform(blk["mlp"]["fc1"]["kernel"], math.sqrt(6 / (d + m)))
    check_uniform(blk["mlp"]["fc2"]["kernel"], math.sqrt(6 / (m + d)))
    biases = [params["patch_embed"]["bias"], blk["mlp"]["fc1"]["bias"], blk["mlp"]["fc2"]["bias"]]
    biases += [blk["attn"][n]["bias"] for n in ("query", "key", "value", "out")]
    assert all(np.all(np.asarray(b) == 0) for b in biases)
    for ln in (blk["norm1"], blk["norm2"], params["norm"]):
        assert np.all(np.asarray(ln["scale"]) == 1) and np.all(np.asarray(ln["bias"]) == 0)
    cls = np.asarray(params["cls_token"])
    assert 0.5e-6 < cls.std() < 1.5e-6


def numpy_vit(params, images, patch, heads, eps=1e-6):
    """Independent float64 forward: loops over patches, explicit attention, erf GELU."""
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    b, h, w, _ = images.shape
    gh, gw = h // patch, w // patch
    kernel, bias = P["patch_embed"]["kernel"], P["patch_embed"]["bias"]
    d = bias.shape[0]
    erf = np.vectorize(math.erf)

    def ln(x, prm):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * prm["scale"] + prm["bias"]

    feats = []
    for i in range(b):
        tokens = [P["cls_token"][0, 0]]
        for r in range(gh):
            for c in range(gw):
                patch_px = images[i, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
                tokens.append(np.einsum("ijc,ijcd->d", patch_px, kernel) + bias)
        x = np.stack(tokens) + loop_sincos(gh, gw, d)                        # [1+N, D]
        blk_names = sorted((k for k in P if k.startswith("block_")), key=lambda k: int(k[6:]))
        for name in blk_names:
            blk = P[name]
            y = ln(x, blk["norm1"])
            att = blk["attn"]
            proj = {n: y @ att[n]["kernel"].reshape(d, d) + att[n]["bias"].reshape(d)
                    for n in ("query", "key", "value")}
            hd = d // heads
            outs = []
            for k in range(heads):
                q_, k_, v_ = (proj[n][:, k * hd:(k + 1) * hd] for n in ("query", "key", "value"))
                s = q_ @ k_.T / math.sqrt(hd)
                a = np.exp(s - s.max(-1, keepdims=True))
                outs.append((a / a.sum(-1, keepdims=True)) @ v_)
            o = np.concatenate(outs, -1)
            x = x + o @ blk["attn"]["out"]["kernel"].reshape(d, d) + blk["attn"]["out"]["bias"]
            y = ln(x, blk["norm2"])
            hmid = y @ blk["mlp"]["fc1"]["kernel"] + blk["mlp"]["fc1"]["bias"]
            hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))               # exact GELU
            x = x + hmid @ blk["mlp"]["fc2"]["kernel"] + blk["mlp"]["fc2"]["bias"]
        feats.append(ln(x, P["norm"])[0])
    return np.stack(feats)


def randomise(params, seed=1, scale=0.3):
    """Random values everywhere (LN scales/biases, cls token too) so every term is exercised."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, a.shape) + (a.ndim == 1)
                                        for k, a in zip(keys, leaves)])


@pytest.mark.parametrize("size", [(16, 16), (8, 12)])
def test_forward_matches_numpy_reference(size):
    model = vit.vit_tiny_test()
    params = randomise(init_params(model))
    images = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (2, *size, 3)), np.float32)
    got = model.apply({"params": params}, images, train=False)
    assert got.shape == (2, 32) and got.dtype == jnp.float32
    # float32 vs float64 differs by ~1e-6; tanh-approximate GELU would be off by ~3e-4.
    np.testing.assert_allclose(np.asarray(got), numpy_vit(params, images.astype(np.float64), 4, 4),
                               atol=2e-5, rtol=0)


def test_image_sizes_and_errors():
    model = vit.vit_tiny_test()
    params = init_params(model)
    for hw in [(32, 32), (16, 24), (4, 4)]:
        out = model.apply({"params": params}, jnp.ones((3, *hw, 3)), train=True)
        assert out.shape == (3, 32) and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match="image size 30x32 is not divisible by the ViT patch size"):
        model.apply({"params": params}, jnp.ones((1, 30, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        model.apply({"params": params}, jnp.ones((32, 32, 3)), train=False)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        init_params(ViT(hidden_dim=36, depth=1, num_heads=5, mlp_dim=8, patch_size=4))


def test_bfloat16_compute_close_to_float32():
    images = jax.random.uniform(jax.random.PRNGKey(3), (2, 16, 16, 3))
    params = init_params(vit.vit_tiny_test())
    f32 = vit.vit_tiny_test().apply({"params": params}, images)
    bf16 = vit.vit_tiny_test(dtype=jnp.bfloat16).apply({"params": params}, images)
    assert bf16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(f32 - bf16))) < 0.1


def loss_fn(model, images, proj):
    def loss(params):
        return jnp.sum((model.apply({"params": params}, images, train=True) * proj) ** 2)
    return loss


def leaves_with_paths(tree):
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def test_frozen_patch_embed_gets_exactly_zero_gradient():
    images = jax.random.uniform(jax.random.PRNGKey(4), (4, 16, 16, 3))
    proj = jax.random.normal(jax.random.PRNGKey(5), (4, 32))
    for frozen in (True, False):
        model = vit.vit_tiny_test(stop_grad_patch_embed=frozen)
        params = init_params(model)
        grads = jax.grad(loss_fn(model, images, proj))(params)
        for path, g in leaves_with_paths(grads):
            g = np.asarray(g)
            if frozen and path.startswith("patch_embed"):
                assert np.all(g == 0), path
            else:
                assert np.any(g != 0), path


def test_frozen_param_mask():
    params = init_params(vit.vit_tiny_test(stop_grad_patch_embed=True))
    nested = {"backbone": params, "projector": {"kernel": jnp.ones((2, 2))}}
    flagged = {p for p, m in leaves_with_paths(frozen_param_mask(nested)) if m}
    assert flagged == {"backbone/patch_embed/kernel", "backbone/patch_embed/bias"}
    assert vit.vit_tiny_test(stop_grad_patch_embed=True).frozen_param_mask(params)["patch_embed"] \
        == {"kernel": True, "bias": True}
    assert not any(jax.tree.leaves(vit.vit_tiny_test().frozen_param_mask(params)))


def run_adamw(grad_fn, params, tx, steps=3):
    opt_state = tx.init(params)
    for _ in range(steps):
        updates, opt_state = tx.update(grad_fn(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_adamw_with_mask_keeps_patch_embed_bit_identical():
    model = vit.vit_tiny_test(stop_grad_patch_embed=True)
    params0 = init_params(model)
    images = jax.random.uniform(jax.random.PRNGKey(6), (4, 16, 16, 3))
    proj = jax.random.normal(jax.random.PRNGKey(7), (4, 32))
    grad_fn = jax.jit(jax.grad(loss_fn(model, images, proj)))
    mask = model.frozen_param_mask(params0)
    adamw = optax.adamw(1e-2, weight_decay=0.1)
    masked = optax.chain(adamw, optax.masked(optax.set_to_zero(), mask))
    multi = optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()},
                                  jax.tree.map(lambda f: "frozen" if f else "train", mask))
    for tx in (masked, multi):
        params3 = run_adamw(grad_fn, params0, tx)
        for (path, a), (_, b) in zip(leaves_with_paths(params0), leaves_with_paths(params3)):
            if path.startswith("patch_embed"):
                assert np.array_equal(np.asarray(a), np.asarray(b)), path
            else:
                assert not np.array_equal(np.asarray(a), np.asarray(b)), path
    # Why the mask is needed: with a zero gradient, AdamW's decoupled weight decay alone still
    # shrinks the frozen kernel.
    unmasked = run_adamw(grad_fn, params0, adamw)
    assert not np.array_equal(np.asarray(params0["patch_embed"]["kernel"]),
                              np.asarray(unmasked["patch_embed"]["kernel"]))


# ----------------------------------------------------------------------------- stochastic depth

def test_drop_path_is_the_identity_at_rate_0_in_eval_mode_and_without_a_dropout_rng():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 16, 16, 3)), jnp.float32)
    plain = vit.vit_tiny_test()
    variables = plain.init(jax.random.PRNGKey(0), x)
    ref = plain.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    dropping = vit.vit_tiny_test(drop_path_rate=0.5)        # same parameters (none added)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    np.testing.assert_array_equal(dropping.apply(variables, x, train=False, rngs=rngs), ref)
    np.testing.assert_array_equal(dropping.apply(variables, x, train=True), ref)  # no RNG
    trained = np.asarray(dropping.apply(variables, x, train=True, rngs=rngs))
    assert not np.allclose(trained, ref, atol=1e-4)


def test_drop_path_drops_whole_examples_with_the_rate_and_rescales_the_kept():
    """timm's / DINO's drop_path: x / keep_prob or 0, one draw per example."""
    import flax.linen as nn

    class Branch(nn.Module):
        @nn.compact
        def __call__(self, x):
            return vit.drop_path(self, x, 0.25, train=True)

    x = jnp.ones((4000, 3, 2))
    y = np.asarray(Branch().apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)}))
    per_example = y.reshape(4000, -1)
    assert np.all((per_example == 0).all(1) | np.isclose(per_example, 1 / 0.75).all(1))
    assert (per_example[:, 0] == 0).mean() == pytest.approx(0.25, abs=0.03)


def test_learned_position_embedding_applies_at_another_grid_than_at_init():
    """Multi-crop: a learned pos_embed made at the 16 px grid, applied to 8 px crops."""
    model = vit.vit_tiny_test(pos_embed="learned")
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))
    assert variables["params"]["pos_embed"].shape == (1, 1 + 16, 32)
    assert model.apply(variables, jnp.zeros((2, 8, 8, 3))).shape == (2, 32)
