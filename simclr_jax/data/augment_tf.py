"""Per-image augmentations in TensorFlow with STATELESS randomness.

A view is a pure function of (image, config, draws): `draws` holds the view's NUM_DRAWS
uniform numbers in [0, 1), one slot per random decision. The pipeline draws them for a whole
global batch at once (`pipeline`: one stateless op per step instead of a few per view);
`augment_view(..., seed)` draws them from a [2] seed. Either way a resumed run recomputes exactly
the views an uninterrupted run saw, and tests can fix the randomness.

Policy (SimCLR / MoCo / BYOL): random resized crop (torchvision's algorithm: area U(min, max),
log-uniform aspect, 10 attempts, centre-crop fallback) -> resize to S -> horizontal flip ->
colour jitter with probability p (brightness, contrast, saturation, hue in random order, clip
to [0, 1] after each) and grayscale (MoCo v1: grayscale first) -> Gaussian blur (per-image sigma,
2*((S//10)//2)+1 taps, separable, reflect padding) -> solarize -> normalize.

Choices that differ between references, and ours:
- Antialiasing is a per-view option (`antialias`) that follows each reference: off for SimCLR and
  BYOL (both resize bicubic with `tf.image.resize`, no antialias), on for MoCo (torchvision/PIL
  filters when downscaling). Upscaling, the usual CIFAR case, is unaffected. Off is also ~1.5x
  cheaper on the host at 224 px (BENCHMARKS.md).
- Brightness is multiplicative (SimCLR v2: x * f, f ~ U[1-s, 1+s]) or additive (BYOL:
  x + d, d ~ U[-s, s]): `brightness_mode`.
- Contrast and saturation follow TF SimCLR (`tf.image.adjust_contrast` per-channel mean,
  HSV saturation), not torchvision's grayscale blends.
- Blur sigma is drawn per image (TF SimCLR drew one per device batch).
- The image is decoded once for all its views (the official SimCLR code does the same), and
  the crop windows of all views are computed in one set of vectorised ops.
- The horizontal flip is a `tf.cond` on the resized view (a `tf.where` reads and writes the
  view twice whether or not it flips; at 224 px that cost more than the resize).
- Saturation is computed elementwise in RGB from 64 px up (`adjust_saturation`): the same
  values as TF's fused HSV kernel within 1e-6, at half its cost at 224 px.
"""
from __future__ import annotations

import functools

from simclr_jax.data import draw_slots, normalization, tf_support
from simclr_jax.errors import UserError

tf = tf_support.tensorflow("the host pipeline's TF augmentation")  # one line where TF is missing


_RESIZE_METHODS = {
    "bicubic": tf.image.ResizeMethod.BICUBIC,
    "bilinear": tf.image.ResizeMethod.BILINEAR,
    "nearest": tf.image.ResizeMethod.NEAREST_NEIGHBOR,
    "area": tf.image.ResizeMethod.AREA,
    "lanczos3": tf.image.ResizeMethod.LANCZOS3,
}
# Slots of one view's draws (uniforms in [0, 1)): one layout for the host and device paths.
_CROP_ATTEMPTS = draw_slots.CROP_ATTEMPTS
_D_AREA, _D_ASPECT, _D_OFFSET = draw_slots.AREA, draw_slots.ASPECT, draw_slots.OFFSET
(_D_FLIP, _D_JITTER_APPLY, _D_BRIGHT, _D_CONTRAST, _D_SAT, _D_HUE, _D_GRAY, _D_BLUR_APPLY,
 _D_BLUR_SIGMA, _D_SOLARIZE) = (draw_slots.FLIP, draw_slots.JITTER_APPLY, draw_slots.BRIGHT,
                                draw_slots.CONTRAST, draw_slots.SAT, draw_slots.HUE,
                                draw_slots.GRAY, draw_slots.BLUR_APPLY, draw_slots.BLUR_SIGMA,
                                draw_slots.SOLARIZE)
_D_ORDER = draw_slots.ORDER
NUM_DRAWS = draw_slots.NUM_DRAWS


def draws_from_seed(seed) -> tf.Tensor:
    """[2] int seed -> one view's draws: float32 [NUM_DRAWS] uniforms in [0, 1)."""
    return tf.random.stateless_uniform([NUM_DRAWS], seed=tf.cast(seed, tf.int64))


def _between(u, lo: float, hi: float):
    """A uniform u in [0, 1) -> U[lo, hi)."""
    return lo + u * (hi - lo)


# ----------------------------------------------------------------------------- crop

def crop_windows(height, width, view_cfgs, draws):
    """torchvision RandomResizedCrop.get_params for V views at once, vectorised over views and
    their 10 attempts.

    draws: float32 [V, NUM_DRAWS], one row per entry of `view_cfgs`. Returns int32 [V] tensors
    (y, x, h, w). Attempt t draws area ~ U(min, max) * H * W and aspect =
    exp(U(log r_min, log r_max)); the first attempt whose rounded (w, h) fits wins and gets a
    uniform offset. If none fits: centre crop of the whole image with its aspect clamped to
    [r_min, r_max].
    """
    def col(key):  # one policy field of every view: [V, 1]
        return tf.constant([[float(c[key])] for c in view_cfgs], tf.float32)

    area_lo, area_hi = col("crop_area_min"), col("crop_area_max")
    r_lo, r_hi = col("crop_aspect_min"), col("crop_aspect_max")
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = h_f * w_f * (area_lo + draws[:, _D_AREA] * (area_hi - area_lo))      # [V, 10]
    log_lo, log_hi = tf.math.log(r_lo), tf.math.log(r_hi)
    aspect = tf.exp(log_lo + draws[:, _D_ASPECT] * (log_hi - log_lo))          # [V, 10]
    w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)                    # [V, 10]
    h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)                    # [V, 10]
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)                      # [V, 10]
    first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)    # [V]
    found = tf.reduce_any(ok, axis=1)                                          # [V]

    # Fallback: the whole image with its aspect ratio clamped into range, centred.
    in_ratio = w_f / h_f
    fb_w = tf.where(in_ratio > r_hi[:, 0], tf.round(h_f * r_hi[:, 0]), w_f)
    fb_h = tf.where(in_ratio < r_lo[:, 0], tf.round(w_f / r_lo[:, 0]), h_f)
    fb_w = tf.clip_by_value(tf.cast(fb_w, tf.int32), 1, width)
    fb_h = tf.clip_by_value(tf.cast(fb_h, tf.int32), 1, height)

    crop_h = tf.where(found, tf.gather(h, first, batch_dims=1), fb_h)          # [V]
    crop_w = tf.where(found, tf.gather(w, first, batch_dims=1), fb_w)
    u = draws[:, _D_OFFSET]                                                    # [V, 2]
    # randint(0, H - h + 1) as floor(u * (H - h + 1)); min() guards u -> 1 rounding.
    rand_y = tf.minimum(tf.cast(u[:, 0] * tf.cast(height - crop_h + 1, tf.float32), tf.int32),
                        height - crop_h)
    rand_x = tf.minimum(tf.cast(u[:, 1] * tf.cast(width - crop_w + 1, tf.float32), tf.int32),
                        width - crop_w)
    y = tf.where(found, rand_y, (height - crop_h) // 2)
    x = tf.where(found, rand_x, (width - crop_w) // 2)
    return y, x, crop_h, crop_w


def sample_crop_window(height, width, view_cfg, seed):
    """One view's crop window (int32 scalars y, x, h, w) with draws from a [2] seed."""
    window = crop_windows(height, width, [view_cfg], draws_from_seed(seed)[None])
    return tuple(t[0] for t in window)


def resize_255(image, image_size: int, method: str, antialias: bool = True):
    """uint8 [h, w, 3] -> float32 [S, S, 3] on the 0..255 scale (cubic kernels overshoot it).

    The crop goes to the resize op as uint8: no float copy of the (often larger) crop.
    """
    if method not in _RESIZE_METHODS:
        raise UserError(f"resize_method={method!r}; choose one of {sorted(_RESIZE_METHODS)}.")
    x = tf.image.resize(image, [image_size, image_size], method=_RESIZE_METHODS[method],
                        antialias=antialias and method != "nearest")
    return tf.cast(x, tf.float32)  # nearest keeps the input dtype


def resize(image, image_size: int, method: str, antialias: bool = True):
    """uint8 [h, w, 3] -> float32 [S, S, 3] in [0, 1]."""
    return to_unit(resize_255(image, image_size, method, antialias))


def to_unit(x255):
    """0..255-scale float -> [0, 1], clipped."""
    return tf.clip_by_value(x255 * (1.0 / 255.0), 0.0, 1.0)


# ----------------------------------------------------------------------------- colour

def jitter_order(u) -> tf.Tensor:
    """4 uniforms -> a uniformly random permutation of the 4 jitter ops: [4] int32."""
    return tf.argsort(u)  # int32


def apply_in_order(x, fns, order):
    """x -> fns[order[-1]](... fns[order[0]](x)); `order` is a runtime permutation tensor.

    An index outside [0, len(fns)) is the identity: that is how a jitter that is not applied
    skips its work without an enclosing tf.cond (which costs more than the ops at 32 px).
    """
    for i in range(len(fns)):
        x = tf.switch_case(order[i], [functools.partial(fn, x) for fn in fns],
                           default=lambda x=x: x)
    return x


def _factor_range(strength: float) -> tuple[float, float]:
    return max(0.0, 1.0 - strength), 1.0 + strength


BRIGHTNESS_MODES = ("multiplicative", "additive")


def brightness_mode(view_cfg) -> str:
    mode = view_cfg.get("brightness_mode", "multiplicative")
    if mode not in BRIGHTNESS_MODES:
        raise ValueError(f"brightness_mode={mode!r}; use one of {BRIGHTNESS_MODES}.")
    return mode


_ELEMENTWISE_SATURATION_MIN_SIDE = 64


def adjust_saturation(x, factor):
    """tf.image.adjust_saturation: HSV saturation * factor clamped to [0, 1], H and V kept.

    From about 64 px up it is computed in RGB, elementwise: with v = max and c = max - min over
    the channels, each channel becomes v - (v - x) * min(factor, v / c) (HSV's channels are
    affine in S at fixed H and V). TF's fused kernel converts pixel by pixel to HSV and back in
    scalar code: 2x slower at 224 px, but faster below ~64 px where the op count dominates.
    Both agree within 1e-6 (tests/test_augment.py); either may pass [0, 1] by an ulp.
    """
    if x.shape[0] is None or x.shape[0] < _ELEMENTWISE_SATURATION_MIN_SIDE:
        return tf.image.adjust_saturation(x, factor)
    r, g, b = tf.unstack(x, axis=-1)                                            # [H, W] each
    v = tf.maximum(tf.maximum(r, g), b)
    ratio = tf.minimum(factor, tf.math.divide_no_nan(v, v - tf.minimum(tf.minimum(r, g), b)))
    return x * ratio[..., None] + (v * (1.0 - ratio))[..., None]


def color_jitter(x, view_cfg, draws, apply=True):
    """Brightness, contrast, saturation, hue in random order, clipping after each op.

    Factors: contrast/saturation f ~ U[max(0, 1-s), 1+s], hue delta ~ U[-h, h]; brightness
    x * f with f ~ U[max(0, 1-s), 1+s] ("multiplicative", SimCLR) or x + d with d ~ U[-s, s]
    ("additive", BYOL). An op with strength 0 is the identity (and costs nothing). `apply`
    (a bool tensor) False returns x unchanged. `draws`: the view's [NUM_DRAWS] uniforms.
    """
    clip = lambda t: tf.clip_by_value(t, 0.0, 1.0)
    ident = lambda t: t
    fns = [ident, ident, ident, ident]
    if view_cfg.brightness > 0:
        if brightness_mode(view_cfg) == "additive":
            d_b = _between(draws[_D_BRIGHT], -view_cfg.brightness, view_cfg.brightness)
            fns[0] = lambda t: clip(t + d_b)
        else:
            f_b = _between(draws[_D_BRIGHT], *_factor_range(view_cfg.brightness))
            fns[0] = lambda t: clip(t * f_b)
    if view_cfg.contrast > 0:
        f_c = _between(draws[_D_CONTRAST], *_factor_range(view_cfg.contrast))
        fns[1] = lambda t: clip(tf.image.adjust_contrast(t, f_c))
    if view_cfg.saturation > 0:
        f_s = _between(draws[_D_SAT], *_factor_range(view_cfg.saturation))
        fns[2] = lambda t: clip(adjust_saturation(t, f_s))
    if view_cfg.hue > 0:
        if view_cfg.hue > 0.5:
            raise UserError(f"hue={view_cfg.hue} must be in [0, 0.5] (a hue shift is mod 1).")
        d_h = _between(draws[_D_HUE], -view_cfg.hue, view_cfg.hue)
        fns[3] = lambda t: clip(tf.image.adjust_hue(t, d_h))
    order = tf.where(apply, jitter_order(draws[_D_ORDER]), len(fns))
    return apply_in_order(x, fns, order)


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # tf.image.rgb_to_grayscale (ITU-R 601 luma)


def to_grayscale(x):
    """[H, W, 3] float -> luma replicated to 3 channels (tf.image.rgb_to_grayscale's weights in
    three ops: its tensordot costs more than the arithmetic on small images)."""
    y = tf.reduce_sum(x * tf.constant(GRAY_WEIGHTS, x.dtype), axis=-1, keepdims=True)
    return tf.broadcast_to(y, tf.shape(x))


def _maybe(u, prob: float, fn, x, use_cond: bool):
    """fn(x) if the uniform u < prob; static 0/1 probabilities add no graph at all."""
    if prob <= 0.0:
        return x
    if prob >= 1.0:
        return fn(x)
    apply = u < prob
    if use_cond:  # skip the work when not applied (expensive ops)
        return tf.cond(apply, lambda: fn(x), lambda: x)
    return tf.where(apply, fn(x), x)


# ----------------------------------------------------------------------------- blur, solarize

def blur_kernel_size(image_size: int) -> int:
    """SimCLR's kernel: 10% of the side, made odd: 2*((S//10)//2)+1 taps (23 at 224, 3 at 32)."""
    return 2 * ((image_size // 10) // 2) + 1


def gaussian_blur(x, sigma, kernel_size: int):
    """Separable Gaussian blur of [H, W, C] float with reflect padding; sigma may be a tensor."""
    radius = kernel_size // 2
    if radius == 0:
        return x
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-tf.square(t) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
    k = k / tf.reduce_sum(k)                                                   # [K]
    channels = tf.shape(x)[-1]
    k_v = tf.tile(tf.reshape(k, [kernel_size, 1, 1, 1]), [1, 1, channels, 1])  # [K,1,C,1]
    k_h = tf.tile(tf.reshape(k, [1, kernel_size, 1, 1]), [1, 1, channels, 1])  # [1,K,C,1]
    y = tf.pad(x, [[radius, radius], [radius, radius], [0, 0]], mode="REFLECT")[None]
    y = tf.nn.depthwise_conv2d(y, k_v, strides=[1, 1, 1, 1], padding="VALID")
    y = tf.nn.depthwise_conv2d(y, k_h, strides=[1, 1, 1, 1], padding="VALID")
    return y[0]


def solarize(x, threshold: float = 0.5):
    return tf.where(x >= threshold, 1.0 - x, x)


def normalize(x, how: str):
    return normalization.normalize(x, how)


# ----------------------------------------------------------------------------- views

def to_uint8(x255):
    """0..255-scale float -> uint8, rounded (what the host ships when colour runs on the
    device)."""
    return tf.cast(tf.clip_by_value(tf.round(x255), 0.0, 255.0), tf.uint8)


def _after_crop(crop, view_cfg, image_size: int, draws, host_only: bool = False):
    """Cropped uint8 [h, w, 3] -> the finished float32 view [S, S, 3], or with `host_only`
    the resized and flipped uint8 view (colour, blur, solarize, normalize: augment_jax)."""
    x = resize_255(crop, image_size, view_cfg.resize_method, view_cfg.get("antialias", True))
    x.set_shape([image_size, image_size, 3])
    x = to_uint8(x) if host_only else to_unit(x)
    x = _maybe(draws[_D_FLIP], view_cfg.flip_prob, lambda t: tf.reverse(t, axis=[1]), x, True)
    if host_only:
        return x
    p_jitter = view_cfg.jitter_prob
    jitter = lambda t: t if p_jitter <= 0 else color_jitter(
        t, view_cfg, draws, p_jitter >= 1 or draws[_D_JITTER_APPLY] < p_jitter)
    gray = lambda t: _maybe(draws[_D_GRAY], view_cfg.grayscale_prob, to_grayscale, t, True)
    x = jitter(gray(x)) if view_cfg.grayscale_first else gray(jitter(x))
    if view_cfg.blur_prob > 0:
        sigma = _between(draws[_D_BLUR_SIGMA], view_cfg.blur_sigma_min, view_cfg.blur_sigma_max)
        size = blur_kernel_size(image_size)

        def blur(t):  # a weighted mean of [0, 1] values; rounding can pass 1 by an ulp
            return tf.clip_by_value(gaussian_blur(t, sigma, size), 0.0, 1.0)

        x = _maybe(draws[_D_BLUR_APPLY], view_cfg.blur_prob, blur, x, True)
    x = _maybe(draws[_D_SOLARIZE], view_cfg.solarize_prob, solarize, x, False)
    return normalize(x, view_cfg.normalize)


def augment_views(image, view_cfgs, image_size, draws, host_only: bool = False) -> list:
    """uint8 [H, W, 3] -> one view per entry of `view_cfgs`, view k drawn with draws[k]
    (float32 [V, NUM_DRAWS]): float32 [S_k, S_k, 3] each (image_size: one size for all views or
    a list, one per view), uint8 with `host_only` (crop, resize and flip only). The image is
    decoded once for all views; their windows are computed together."""
    sizes = list(image_size) if isinstance(image_size, (list, tuple)) else (
        [image_size] * len(view_cfgs))
    shape = tf.shape(image)
    ys, xs, hs, ws = crop_windows(shape[0], shape[1], view_cfgs, draws)
    views = []
    for k, cfg in enumerate(view_cfgs):
        crop = tf.slice(image, tf.stack([ys[k], xs[k], 0]), tf.stack([hs[k], ws[k], 3]))
        views.append(_after_crop(crop, cfg, sizes[k], draws[k], host_only))
    return views


def augment_view(image, view_cfg, image_size: int, seed, host_only: bool = False):
    """uint8 [H, W, 3] -> float32 [S, S, 3] (uint8 with `host_only`: crop, resize, flip only);
    the same [2] seed gives the same view."""
    draws = draws_from_seed(seed)[None]
    return augment_views(image, [view_cfg], image_size, draws, host_only)[0]


def decode(encoded):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] (grayscale and RGBA become RGB)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def eval_view(image, image_size: int, crop_fraction: float = 1.0, normalize_how: str = "none",
              resize_method: str = "bicubic"):
    """Deterministic view for evaluation: centre square crop of `crop_fraction` of the short
    side (SimCLR: 0.875 above 32 px, none at CIFAR size), resize, normalize."""
    shape = tf.shape(image)
    short = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    side = tf.maximum(tf.cast(tf.round(short * crop_fraction), tf.int32), 1)
    y, x = (shape[0] - side) // 2, (shape[1] - side) // 2
    crop = tf.slice(image, tf.stack([y, x, 0]), tf.stack([side, side, 3]))
    out = resize(crop, image_size, resize_method)
    out.set_shape([image_size, image_size, 3])
    return normalize(out, normalize_how)
