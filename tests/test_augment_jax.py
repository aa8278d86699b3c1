"""On-device augmentation (augment_jax): each op against its TF counterpart on the same inputs,
the distributions of the random factors, determinism per (seed, step, row), the host's uint8
views, and BYOL's additive brightness against a transcription of BYOL's formula."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from simclr_jax import parallel
from simclr_jax.data import aug_presets, augment_jax, augment_tf, pipeline, sources

N_KEYS = 4000
TOL = 2e-6   # float32 round-off between two implementations of the same formula


def images(n=4, size=12, seed=0):
    """float32 [n, S, S, 3] in [0, 1] with grey, saturated and equal-channel pixels (the HSV
    conversion's edge cases)."""
    x = np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)
    x[0, :3, :3] = 0.5
    x[1, :3, :3] = [1.0, 0.0, 0.0]
    x[2, :3, :3, 1:] = x[2, :3, :3, :1]
    x[3, :2, :2] = 0.0
    return x


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ----------------------------------------------------------------------------- ops vs TF

@pytest.mark.parametrize("factor", [0.2, 1.0, 1.8])
def test_contrast_and_saturation_match_tf(factor):
    for x in images():
        assert max_diff(augment_jax.adjust_contrast(x, factor),
                        tf.image.adjust_contrast(x, factor)) < TOL
        assert max_diff(augment_jax.adjust_saturation(x, factor),
                        tf.image.adjust_saturation(x, factor)) < TOL


@pytest.mark.parametrize("delta", [-0.5, -0.2, 0.05, 0.4])
def test_hue_matches_tf(delta):
    for x in images():
        assert max_diff(augment_jax.adjust_hue(x, delta), tf.image.adjust_hue(x, delta)) < TOL


def test_grayscale_solarize_normalize_match_tf():
    for x in images():
        assert max_diff(augment_jax.to_grayscale(x), augment_tf.to_grayscale(x)) < TOL
        assert max_diff(augment_jax.solarize(x), augment_tf.solarize(x)) == 0.0
        assert max_diff(augment_jax.normalize(x, "imagenet"),
                        augment_tf.normalize(x, "imagenet")) < TOL


@pytest.mark.parametrize("image_size,sigma", [(32, 0.3), (224, 2.0), (64, 1.1)])
def test_blur_matches_tf(image_size, sigma):
    x = np.random.default_rng(1).uniform(size=(40, 48, 3)).astype(np.float32)
    k = augment_jax.blur_kernel_size(image_size)
    assert k == augment_tf.blur_kernel_size(image_size)
    assert max_diff(augment_jax.gaussian_blur(x, sigma, k),
                    augment_tf.gaussian_blur(x, sigma, k)) < TOL


def _tf_jitter(x, p, cfg):
    """augment_tf's random-order composition with the same factors and order."""
    clip = lambda t: tf.clip_by_value(t, 0.0, 1.0)
    b = float(p["brightness"])
    bright = (lambda t: clip(t + b)) if cfg.brightness_mode == "additive" else (
        lambda t: clip(t * b))
    fns = [bright, lambda t: clip(tf.image.adjust_contrast(t, float(p["contrast"]))),
           lambda t: clip(tf.image.adjust_saturation(t, float(p["saturation"]))),
           lambda t: clip(tf.image.adjust_hue(t, float(p["hue"])))]
    return augment_tf.apply_in_order(tf.constant(x), fns, tf.constant(p["order"]))


@pytest.mark.parametrize("preset", ["simclr", "byol_view1"])
def test_random_order_jitter_matches_tf_for_every_order(preset):
    cfg = getattr(aug_presets, preset)()
    x = images(4, 10)[1]
    p = {"brightness": 1.3 if cfg.brightness_mode == "multiplicative" else 0.25,
         "contrast": 0.7, "saturation": 1.6, "hue": 0.15}
    results = []
    for order in itertools.permutations(range(4)):
        p["order"] = np.array(order, np.int32)
        got = augment_jax.color_jitter(jnp.asarray(x), p, cfg)
        assert max_diff(got, _tf_jitter(x, p, cfg)) < 1e-5, order
        results.append(np.asarray(got))
    # The order matters (else this test could not tell a wrong order from a right one).
    assert max(max_diff(results[0], r) for r in results[1:]) > 0.05


# ----------------------------------------------------------------------------- random factors

def sampled(view_cfg, n=N_KEYS):
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    return jax.tree.map(np.asarray, jax.vmap(lambda k: augment_jax.sample_params(k, view_cfg))(
        keys))


def assert_uniform(values, lo, hi):
    """Range and the deciles of U[lo, hi] (Kolmogorov-Smirnov style, 4000 draws)."""
    assert values.min() >= lo and values.max() <= hi
    assert values.min() < lo + 0.01 * (hi - lo) and values.max() > hi - 0.01 * (hi - lo)
    deciles = np.quantile(values, np.linspace(0.1, 0.9, 9))
    np.testing.assert_allclose(deciles, lo + (hi - lo) * np.linspace(0.1, 0.9, 9),
                               atol=0.03 * (hi - lo))


def within_4_sigma(flags, p):
    return abs(flags.mean() - p) <= 4 * np.sqrt(p * (1 - p) / flags.size)


def test_factor_distributions_simclr():
    cfg = aug_presets.simclr(strength=1.0, blur_prob=0.5)
    cfg.solarize_prob = 0.2
    p = sampled(cfg)
    for name in ("brightness", "contrast", "saturation"):
        assert_uniform(p[name], 0.2, 1.8)
    assert_uniform(p["hue"], -0.2, 0.2)
    assert_uniform(p["sigma"], 0.1, 2.0)
    for name, prob in (("jitter", 0.8), ("gray", 0.2), ("blur", 0.5), ("solarize", 0.2)):
        assert within_4_sigma(p[name], prob), name
    # The jitter order is a uniform random permutation of the 4 ops.
    counts = {}
    for order in map(tuple, p["order"]):
        counts[order] = counts.get(order, 0) + 1
    assert set(counts) == set(itertools.permutations(range(4)))
    expected = N_KEYS / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 60, chi2          # 23 degrees of freedom: P(chi2 > 60) < 1e-4
    # Decisions are independent of each other (no shared key).
    assert abs(np.corrcoef(p["jitter"], p["gray"])[0, 1]) < 0.07
    assert abs(np.corrcoef(p["brightness"], p["contrast"])[0, 1]) < 0.07


def test_byol_brightness_is_additive_like_byol():
    """BYOL (deepmind-research byol/utils/augmentations.py): x + delta, delta ~ U[-0.4, 0.4],
    then clip to [0, 1]. Both the host (TF) and the device path follow it for the BYOL presets."""
    for preset in (aug_presets.byol_view1(), aug_presets.byol_view2()):
        assert preset.brightness_mode == "additive" and preset.brightness == 0.4
    cfg = aug_presets.byol_view1()
    cfg.update(dict(contrast=0.0, saturation=0.0, hue=0.0, jitter_prob=1.0, grayscale_prob=0.0,
                    blur_prob=0.0, flip_prob=0.0, crop_area_min=1.0, crop_aspect_min=1.0,
                    crop_aspect_max=1.0, normalize="none"))
    level = 128                       # 0.502 +- 0.4 stays inside [0, 1]: no clipping
    x = np.full((4, 4, 3), level / 255, np.float32)

    def byol_reference(delta):        # transcription of BYOL's _random_brightness + clip
        return np.clip(x + delta, 0.0, 1.0)

    # Device path: the output is BYOL's formula at the sampled delta, delta ~ U[-0.4, 0.4].
    p = sampled(cfg, 2000)
    assert_uniform(p["brightness"], -0.4, 0.4)
    for i in range(5):
        pi = jax.tree.map(lambda a: a[i], p)
        got = augment_jax.augment_image(jnp.asarray(x), pi, cfg, 4)
        np.testing.assert_allclose(got, byol_reference(pi["brightness"]), atol=1e-6)
    # Host path: the brightness change of a uniform image is the delta itself, U[-0.4, 0.4]
    # (the multiplicative form would give (f - 1) * 0.5, inside [-0.2, 0.2]).
    image = tf.constant(np.full((4, 4, 3), level, np.uint8))
    views = tf.data.Dataset.range(1000).map(
        lambda i: augment_tf.augment_view(image, cfg, 4, tf.stack([i, 7]))).batch(1000)
    views = next(iter(views.as_numpy_iterator()))                       # [1000, 4, 4, 3]
    deltas = views[:, 0, 0, 0] - level / 255
    expected = np.clip(level / 255 + deltas[:, None, None, None], 0, 1)
    np.testing.assert_allclose(views, np.broadcast_to(expected, views.shape), atol=1e-6)
    assert_uniform(deltas, -0.4, 0.4)


# ----------------------------------------------------------------------------- batches

def test_augment_batch_is_a_function_of_seed_step_and_row():
    cfg = aug_presets.two_views(aug_presets.byol_view1(), aug_presets.byol_view2(),
                                on_device=True)
    rng = np.random.default_rng(0)
    batch = {"view1": rng.integers(0, 256, (16, 12, 12, 3), dtype=np.uint8),
             "view2": rng.integers(0, 256, (16, 12, 12, 3), dtype=np.uint8),
             "label": np.arange(16, dtype=np.int32)}
    run = jax.jit(lambda b, step: augment_jax.augment_batch(b, cfg, 0, step))
    a, again, later = run(batch, 3), run(batch, 3), run(batch, 4)
    for k in ("view1", "view2"):
        assert a[k].dtype == jnp.float32 and a[k].shape == (16, 12, 12, 3)
        np.testing.assert_array_equal(a[k], again[k])
        assert max_diff(a[k], later[k]) > 0.1
    np.testing.assert_array_equal(a["label"], batch["label"])
    # Sharded over 8 devices: the same views (keys come from global rows, not devices).
    mesh = parallel.make_mesh()
    sharded = jax.jit(lambda b, step: augment_jax.augment_batch(b, cfg, 0, step),
                      in_shardings=(parallel.batch_sharding(mesh), None))(batch, 3)
    for k in ("view1", "view2"):
        np.testing.assert_allclose(sharded[k], a[k], atol=1e-5)  # reduction order


def test_host_ships_uint8_crop_resize_flip_only():
    """aug.on_device: the host's uint8 views are the host path's views without colour ops,
    rounded (at most half a grey level apart)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 20, 24, 3), dtype=np.uint8)
    src = sources.Source(name="toy", split="train", num_examples=32, num_classes=1,
                         image_shape=(20, 24, 3), storage="array", images=pixels,
                         labels=np.zeros(32, np.int32))
    mesh = parallel.make_mesh()
    view = aug_presets.simclr(strength=1.0, blur_prob=0.5)
    plain = aug_presets.view(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    batch = lambda aug: next(pipeline.pretrain_batches(src, aug, global_batch_size=16,
                                                       image_size=16, seed=5, mesh=mesh))
    device = batch(aug_presets.two_views(view, view, on_device=True))
    host = batch(aug_presets.two_views(plain, plain))
    for k in ("view1", "view2"):
        assert device[k].dtype == np.uint8
        assert max_diff(np.asarray(device[k]) / 255.0, host[k]) <= 0.5 / 255 + 1e-6
