"""Augmentations: determinism, shapes, and each op's rate and effect against numpy references."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from simclr_jax.data import aug_presets, augment_tf

N_DRAWS = 2000


def plain(**overrides):
    """Identity policy (whole-image crop, no colour ops) plus the overrides under test."""
    cfg = dict(crop_area_min=1.0, crop_area_max=1.0, crop_aspect_min=1.0, crop_aspect_max=1.0,
               flip_prob=0.0, jitter_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
               hue=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    cfg.update(overrides)
    return aug_presets.view(**cfg)


def draws(image, cfg, size, n=N_DRAWS, seed0=0):
    """n views of one image with seeds [i, seed0]: float32 [n, S, S, 3]."""
    image = tf.constant(image)

    def one(i):
        seed = tf.stack([i, tf.constant(seed0, tf.int64)])
        return augment_tf.augment_view(image, cfg, size, seed)

    ds = tf.data.Dataset.range(n).map(one, num_parallel_calls=tf.data.AUTOTUNE).batch(n)
    return next(iter(ds.as_numpy_iterator()))


def within_3_sigma(count, n, p):
    return abs(count / n - p) <= 3 * np.sqrt(p * (1 - p) / n)


def rand_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- basics

@pytest.mark.parametrize("preset", ["simclr", "moco_v1", "moco_v2", "byol_view1", "byol_view2"])
def test_shape_dtype_range_and_determinism(preset):
    cfg = getattr(aug_presets, preset)()
    image = rand_image(37, 53)
    v1 = augment_tf.augment_view(image, cfg, 24, tf.constant([3, 4]))
    v1_again = augment_tf.augment_view(image, cfg, 24, tf.constant([3, 4]))
    v2 = augment_tf.augment_view(image, cfg, 24, tf.constant([3, 5]))
    assert v1.shape == (24, 24, 3) and v1.dtype == tf.float32
    np.testing.assert_array_equal(v1.numpy(), v1_again.numpy())
    assert not np.allclose(v1.numpy(), v2.numpy())
    lo, hi = 0.0, 1.0
    if cfg.normalize == "imagenet":
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        lo, hi = (0 - mean) / std, (1 - mean) / std
    assert np.all(v1.numpy() >= lo - 1e-6) and np.all(v1.numpy() <= hi + 1e-6)


def test_two_views_of_one_image_differ_and_stay_in_unit_range():
    views = draws(rand_image(32, 32), aug_presets.simclr(), 32, n=64)
    assert views.min() >= 0.0 and views.max() <= 1.0
    assert not np.allclose(views[0], views[1])


def test_whole_image_policy_is_identity():
    image = rand_image(16, 16)
    out = augment_tf.augment_view(image, plain(), 16, tf.constant([0, 0])).numpy()
    np.testing.assert_allclose(out, image / 255.0, atol=1e-6)


# ----------------------------------------------------------------------------- crop

def test_crop_windows_fit_and_respect_area_and_aspect():
    cfg = aug_presets.view(crop_area_min=0.08, crop_area_max=1.0)
    H, W = 60, 80
    for s in range(300):
        y, x, h, w = (int(v) for v in augment_tf.sample_crop_window(H, W, cfg, tf.constant([s, 1])))
        assert 0 <= y and 0 <= x and 1 <= h and 1 <= w and y + h <= H and x + w <= W
        # w = round(sqrt(a r)), h = round(sqrt(a / r)): undo the rounding to bound area, aspect.
        a_hi, a_lo = (w + 0.5) * (h + 0.5), max(w - 0.5, 0) * max(h - 0.5, 0)
        assert a_lo <= 1.0 * H * W + 1e-9 and a_hi >= 0.08 * H * W
        assert (w + 0.5) / max(h - 0.5, 1e-9) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3


def test_crop_aspect_is_log_uniform_and_offset_uniform():
    cfg = aug_presets.view(crop_area_min=0.1, crop_area_max=0.1)   # always fits at attempt 1
    H = W = 400
    wins = np.array([[int(v) for v in augment_tf.sample_crop_window(H, W, cfg, tf.constant([s, 2]))]
                     for s in range(600)])
    y, x, h, w = wins.T
    np.testing.assert_allclose(w * h / (H * W), 0.1, rtol=0.05)
    log_r = np.log(w / h)
    # log-uniform on [log 3/4, log 4/3]: symmetric about 0, std = width / sqrt(12)
    assert abs(log_r.mean()) < 3 * (np.log(16 / 9) / np.sqrt(12)) / np.sqrt(len(log_r))
    np.testing.assert_allclose(log_r.std(), np.log(16 / 9) / np.sqrt(12), rtol=0.1)
    rel_x = x / (W - w)
    assert abs(rel_x.mean() - 0.5) < 0.05 and rel_x.min() < 0.05 and rel_x.max() > 0.95


def test_crop_falls_back_to_centre_crop_with_clamped_aspect():
    # A 20x80 image (aspect 4) cannot hold a full-area crop of aspect <= 4/3: torchvision falls
    # back to h = H, w = round(H * 4/3), centred.
    cfg = aug_presets.view(crop_area_min=1.0, crop_area_max=1.0)
    y, x, h, w = (int(v) for v in augment_tf.sample_crop_window(20, 80, cfg, tf.constant([0, 0])))
    assert (h, w) == (20, round(20 * 4 / 3)) and (y, x) == (0, (80 - 27) // 2)
    y, x, h, w = (int(v) for v in augment_tf.sample_crop_window(80, 20, cfg, tf.constant([0, 0])))
    assert (h, w) == (round(20 / (3 / 4)), 20) and (y, x) == ((80 - 27) // 2, 0)


def _torchvision_window(H, W, cfg, u):
    """torchvision RandomResizedCrop.get_params as a plain loop, fed the view's uniforms
    (u[0:10] area, u[10:20] log-aspect, u[20:22] offset) instead of torch's generator."""
    lo, hi = cfg.crop_area_min, cfg.crop_area_max
    log_r = np.log([cfg.crop_aspect_min, cfg.crop_aspect_max])
    for t in range(10):
        target_area = H * W * (lo + np.float32(u[t]) * (hi - lo))
        aspect = np.exp(log_r[0] + u[10 + t] * (log_r[1] - log_r[0]))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= W and 0 < h <= H:
            return (int(u[20] * (H - h + 1)), int(u[21] * (W - w + 1)), h, w), False
    in_ratio = W / H
    if in_ratio < cfg.crop_aspect_min:
        w, h = W, int(round(W / cfg.crop_aspect_min))
    elif in_ratio > cfg.crop_aspect_max:
        h, w = H, int(round(H * cfg.crop_aspect_max))
    else:
        w, h = W, H
    return ((H - h) // 2, (W - w) // 2, h, w), True


def test_crop_windows_of_several_views_match_a_torchvision_transcription():
    """The vectorised windows (all views of an image at once, each with its own policy) equal
    torchvision's loop run view by view on the same uniforms; small and elongated images
    exercise the centre-crop fallback."""
    cfgs = [aug_presets.view(crop_area_min=0.08, crop_area_max=1.0),
            aug_presets.view(crop_area_min=0.5, crop_area_max=1.0, crop_aspect_min=0.5,
                             crop_aspect_max=2.0),
            aug_presets.view(crop_area_min=0.9, crop_area_max=1.0)]
    rng = np.random.default_rng(7)
    fallbacks, exact, total = 0, 0, 0
    for trial in range(150):
        H, W = (int(v) for v in rng.integers(2, 90, 2))
        if trial % 3 == 0:
            W = int(H * rng.uniform(2.5, 4.0)) + 1                    # too wide for 0.9 area
        u = rng.random((3, augment_tf.NUM_DRAWS)).astype(np.float32)
        got = np.stack([t.numpy() for t in augment_tf.crop_windows(H, W, cfgs, tf.constant(u))],
                       1)                                              # [3, (y, x, h, w)]
        for k, cfg in enumerate(cfgs):
            want, fell_back = _torchvision_window(H, W, cfg, u[k].astype(np.float64))
            # float32 vs float64 rounding may move a size by one pixel near .5
            assert np.abs(got[k] - want).max() <= 1, (H, W, k, got[k], want)
            exact += np.array_equal(got[k], want)
            fallbacks += fell_back
            total += 1
    assert fallbacks >= 20 and exact >= 0.97 * total, (fallbacks, exact, total)


def test_crop_area_end_to_end_with_coordinate_image():
    # R encodes the column and G the row (x4), so the output reveals which window was cut.
    n = 64
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    image = np.stack([cols * 4, rows * 4, np.zeros_like(rows)], -1).astype(np.uint8)
    cfg = plain(crop_area_min=0.2, crop_area_max=0.5, crop_aspect_min=3 / 4, crop_aspect_max=4 / 3,
                resize_method="nearest")
    views = np.round(draws(image, cfg, 64, n=200) * 255 / 4).astype(int)
    widths = views[..., 0].max(axis=(1, 2)) - views[..., 0].min(axis=(1, 2)) + 1
    heights = views[..., 1].max(axis=(1, 2)) - views[..., 1].min(axis=(1, 2)) + 1
    frac = widths * heights / n ** 2
    assert frac.min() >= 0.2 * 0.85 and frac.max() <= 0.5 * 1.15
    assert frac.min() < 0.25 and frac.max() > 0.45


# ----------------------------------------------------------------------------- flip, gray, solarize

def test_flip_rate_and_effect():
    image = rand_image(12, 12, seed=1)
    views = draws(image, plain(flip_prob=0.5), 12)
    same = np.all(np.isclose(views, image / 255.0, atol=1e-6), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(views, image[:, ::-1] / 255.0, atol=1e-6), axis=(1, 2, 3))
    assert np.all(same ^ mirrored)
    assert within_3_sigma(mirrored.sum(), N_DRAWS, 0.5)


def test_grayscale_rate_and_luma():
    saturated = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    image = np.repeat(np.repeat(saturated.reshape(2, 2, 3), 4, 0), 4, 1)     # [8, 8, 3]
    views = draws(image, plain(grayscale_prob=0.2), 8)
    gray = np.all(np.abs(views[..., 0] - views[..., 1]) < 1e-6, axis=(1, 2)) & np.all(
        np.abs(views[..., 1] - views[..., 2]) < 1e-6, axis=(1, 2))
    assert within_3_sigma(gray.sum(), N_DRAWS, 0.2)
    luma = (image / 255.0) @ np.array([0.2989, 0.5870, 0.1140])              # ITU-R 601
    np.testing.assert_allclose(views[gray][0][..., 0], luma, atol=1e-3)


def test_solarize_rate_and_effect():
    image = np.random.default_rng(2).integers(140, 243, (8, 8, 3), dtype=np.uint8)  # all >= 0.5
    views = draws(image, plain(solarize_prob=0.2), 8)
    x = image / 255.0
    solarized = np.all(np.isclose(views, 1.0 - x, atol=1e-6), axis=(1, 2, 3))
    untouched = np.all(np.isclose(views, x, atol=1e-6), axis=(1, 2, 3))
    assert np.all(solarized ^ untouched)
    assert within_3_sigma(solarized.sum(), N_DRAWS, 0.2)
    r = np.random.default_rng(3).random((5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(augment_tf.solarize(r).numpy(), np.where(r >= 0.5, 1 - r, r))


# ----------------------------------------------------------------------------- blur

def test_blur_kernel_size_is_ten_percent_made_odd():
    # SimCLR: 23 taps at 224 px; 3 at CIFAR's 32 px.
    assert {s: augment_tf.blur_kernel_size(s) for s in (224, 96, 64, 32, 9)} == {
        224: 23, 96: 9, 64: 7, 32: 3, 9: 1}


def _numpy_blur(x, sigma, k):
    r = k // 2
    t = np.arange(-r, r + 1)
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    p = np.pad(x, [(r, r), (r, r), (0, 0)], mode="reflect")
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.einsum("a,b,abc->c", g, g, p[i:i + k, j:j + k])
    return out


def test_gaussian_blur_matches_numpy_reference():
    x = np.random.default_rng(4).random((10, 12, 3))
    got = augment_tf.gaussian_blur(tf.constant(x, tf.float32), 1.3, 5).numpy()
    np.testing.assert_allclose(got, _numpy_blur(x, 1.3, 5), atol=1e-5)


def test_gaussian_blur_with_tiny_sigma_is_identity():
    x = np.random.default_rng(5).random((16, 16, 3)).astype(np.float32)
    got = augment_tf.gaussian_blur(tf.constant(x), 0.1, 23).numpy()
    np.testing.assert_allclose(got, x, atol=1e-6)


def test_blur_rate():
    # A checkerboard is smoothed by any sigma >= 0.5 and left alone otherwise.
    board = ((np.indices((20, 20)).sum(0) % 2) * 255).astype(np.uint8)
    image = np.repeat(board[..., None], 3, -1)
    views = draws(image, plain(blur_prob=0.5, blur_sigma_min=0.6, blur_sigma_max=2.0), 20, n=1000)
    blurred = np.abs(views - image / 255.0).max(axis=(1, 2, 3)) > 0.05
    assert within_3_sigma(blurred.sum(), 1000, 0.5)


# ----------------------------------------------------------------------------- colour jitter

def test_jitter_order_is_a_uniform_random_permutation():
    draws = tf.random.stateless_uniform([1200, 4], seed=[0, 9])
    orders = np.stack([augment_tf.jitter_order(u).numpy() for u in draws])
    assert np.all(np.sort(orders, axis=1) == np.arange(4))
    counts = {tuple(o): 0 for o in itertools.permutations(range(4))}
    for o in orders:
        counts[tuple(o)] += 1
    expected = len(orders) / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert min(counts.values()) > 0 and chi2 < 50   # 23 dof: P(chi2 > 50) < 1e-3


def test_apply_in_order_composes_in_the_given_order():
    fns = [lambda t: t + 1.0, lambda t: t * 2.0, lambda t: t - 3.0, lambda t: t * t]
    for order in itertools.permutations(range(4)):
        want = 0.5
        for k in order:
            want = [want + 1.0, want * 2.0, want - 3.0, want * want][k]
        got = augment_tf.apply_in_order(tf.constant(0.5), fns, tf.constant(order, tf.int32))
        np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_brightness_factor_uniform_in_range_and_jitter_prob():
    image = np.full((4, 4, 3), 64, np.uint8)                                 # 0.251, no clipping
    views = draws(image, plain(jitter_prob=0.8, brightness=0.8), 4)
    factors = views[:, 0, 0, 0] / (64 / 255.0)
    applied = np.abs(factors - 1.0) > 1e-6
    assert within_3_sigma(applied.sum(), N_DRAWS, 0.8)
    f = factors[applied]
    assert f.min() >= 0.2 - 1e-5 and f.max() <= 1.8 + 1e-5
    assert f.min() < 0.25 and f.max() > 1.75
    assert abs(f.mean() - 1.0) < 3 * (1.6 / np.sqrt(12)) / np.sqrt(len(f))


def test_jitter_order_changes_the_result():
    # Clipping makes brightness and contrast non-commuting: with random order, two draws with
    # equal factors but different orders differ, so over many seeds the outputs are not a
    # function of the factors alone; checked directly on the two possible compositions.
    x = tf.constant(np.random.default_rng(6).random((6, 6, 3)), tf.float32)
    bright = lambda t: tf.clip_by_value(t * 1.7, 0.0, 1.0)
    contrast = lambda t: tf.clip_by_value(tf.image.adjust_contrast(t, 1.7), 0.0, 1.0)
    a = augment_tf.apply_in_order(x, [bright, contrast], tf.constant([0, 1]))
    b = augment_tf.apply_in_order(x, [bright, contrast], tf.constant([1, 0]))
    assert not np.allclose(a.numpy(), b.numpy())


@pytest.mark.parametrize("grayscale_first", [True, False])
def test_grayscale_before_or_after_jitter(grayscale_first):
    # Left half red-ish (250, 10, 10), right half gray 40: brightness f is read off the gray half.
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = (250, 10, 10)
    image[:, 4:] = 40
    cfg = plain(jitter_prob=1.0, brightness=0.8, grayscale_prob=1.0,
                grayscale_first=grayscale_first)
    views = draws(image, cfg, 8, n=200)
    f = views[:, 4, 6, 0] / (40 / 255.0)
    red = np.array([250, 10, 10]) / 255.0
    w = np.array([0.2989, 0.5870, 0.1140])
    if grayscale_first:
        want = np.minimum((red @ w) * f, 1.0)
    else:
        want = np.minimum(red[None] * f[:, None], 1.0) @ w
    np.testing.assert_allclose(views[:, 4, 1, 0], want, atol=2e-3)


# ----------------------------------------------------------------------------- misc

def test_imagenet_normalization():
    image = np.full((4, 4, 3), 128, np.uint8)
    out = augment_tf.augment_view(image, plain(normalize="imagenet"), 4, tf.constant([0, 0]))
    want = (128 / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out.numpy()[0, 0], want, atol=1e-5)


def test_eval_view_centre_crop():
    image = rand_image(40, 48)
    out = augment_tf.eval_view(image, 35, crop_fraction=0.875).numpy()       # side 35 of 40
    np.testing.assert_allclose(out, image[2:37, 6:41] / 255.0, atol=1e-6)


def test_presets_fields_and_values():
    fields = set(aug_presets.view().keys())
    s = aug_presets.simclr(strength=0.5, blur_prob=0.0)
    assert (s.brightness, s.contrast, s.saturation, s.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert s.jitter_prob == 0.8 and s.grayscale_prob == 0.2 and s.blur_prob == 0.0
    assert s.normalize == "none" and s.crop_area_min == 0.08
    m1 = aug_presets.moco_v1()
    assert m1.grayscale_first and m1.jitter_prob == 1.0 and m1.crop_area_min == 0.2
    assert (m1.brightness, m1.contrast, m1.saturation, m1.hue) == (0.4, 0.4, 0.4, 0.4)
    m2 = aug_presets.moco_v2()
    assert (m2.hue, m2.blur_prob, m2.jitter_prob, m2.normalize) == (0.1, 0.5, 0.8, "imagenet")
    b1, b2 = aug_presets.byol_view1(), aug_presets.byol_view2()
    assert (b1.blur_prob, b1.solarize_prob, b2.blur_prob, b2.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    assert (b1.saturation, b1.hue) == (0.2, 0.1)
    v3 = aug_presets.moco_v3_view2()
    assert (v3.crop_area_min, v3.saturation, v3.solarize_prob) == (0.08, 0.2, 0.2)
    for p in (s, m1, m2, b1, b2, v3, aug_presets.moco_v3_view1()):
        assert set(p.keys()) == fields
    both = aug_presets.two_views(b1, b1)
    both.view1.blur_prob = 0.3
    assert both.view2.blur_prob == 1.0 and b1.blur_prob == 1.0


@pytest.mark.parametrize("side", [16, 96])   # TF's fused kernel below 64 px, elementwise above
def test_saturation_equals_tf_adjust_saturation(side):
    rng = np.random.default_rng(8)
    x = rng.random((side, side, 3)).astype(np.float32)
    x[:4] = rng.integers(0, 3, (4, side, 3)) / 2.0          # ties, grays, black and white
    x = tf.constant(x)
    for factor in (0.0, 0.2, 1.0, 1.7, 5.0):
        got = augment_tf.adjust_saturation(x, tf.constant(factor)).numpy()
        want = tf.image.adjust_saturation(x, factor).numpy()
        np.testing.assert_allclose(got, want, atol=2e-6)
