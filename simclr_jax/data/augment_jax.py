"""Colour jitter (random order), grayscale, blur, solarize and normalisation in JAX, on the device.

With `config.aug.on_device` the host ships uint8 views that are only decoded, cropped, resized
and flipped (`augment_tf.augment_view(..., host_only=True)`); `augment_batch` finishes them inside
the jitted train step. Why: the colour ops are a large part of the host's per-view work (profile
in BENCHMARKS.md) and cost an accelerator almost nothing; uint8 views are 4x less host-to-device
traffic. BYOL-JAX did the same because Cloud TPU hosts were its bottleneck.

Same policy and formulas as `augment_tf` (each op is tested against its TF counterpart), but:
- Randomness: the key of view v of global row i at step k is fold_in(seed, k, v, i): a pure
  function of (seed, step, row), so it does not depend on the device count and a resumed run
  recomputes the same views.
- Under vmap every branch runs anyway (a `lax.cond` becomes a select), so every decision is a
  `jnp.where` blend. The random order of the four jitter ops costs one RGB->HSV->RGB round trip
  per slot, shared by the saturation and hue candidates.
- The input was rounded to uint8 on the host (<= 0.5/255 per channel before colour ops).

With `config.dataset.on_device` the WHOLE view is made here (`device_dataset`): `crop_window`
(torchvision's RandomResizedCrop sampler, a transcription of `augment_tf.crop_windows`), the
resize (`resize_weights`: TF's kernels and edge handling as two small matrices per view),
flip, then the colour ops above, from one view's vector of uniform draws laid out as on the host
(`draw_slots`): the same draws give the host view within float round-off (tests/
test_device_dataset.py states the tolerance).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from simclr_jax.data import draw_slots as D
from simclr_jax.data import normalization
from simclr_jax.errors import UserError

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)       # tf.image.rgb_to_grayscale (ITU-R 601 luma)
BRIGHTNESS_MODES = ("multiplicative", "additive")


# ----------------------------------------------------------------------------- colour ops
# One image x: float32 [H, W, 3] in [0, 1]; factors are scalars.

def adjust_brightness(x, factor, mode: str):
    """SimCLR: x * factor (factor ~ U[1-s, 1+s]); BYOL: x + delta (delta ~ U[-s, s])."""
    return x + factor if mode == "additive" else x * factor


def adjust_contrast(x, factor):
    """tf.image.adjust_contrast: (x - mean) * factor + mean, mean per channel over H, W."""
    mean = jnp.mean(x, axis=(-3, -2), keepdims=True)                     # [1, 1, 3]
    return (x - mean) * factor + mean


def rgb_to_hsv(x):
    """[..., 3] RGB -> (h, s, v) each [...], h in [0, 1) (TF's hexcone convention)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = jnp.maximum(jnp.maximum(r, g), b)
    rng = v - jnp.minimum(jnp.minimum(r, g), b)
    s = jnp.where(v > 0, rng / jnp.where(v > 0, v, 1.0), 0.0)
    safe = jnp.where(rng > 0, rng, 1.0)
    h = jnp.where(r == v, (g - b) / safe,
                  jnp.where(g == v, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)) / 6.0
    h = jnp.where(rng > 0, h, 0.0)
    return h % 1.0, s, v


def hsv_to_rgb(h, s, v):
    """Inverse of rgb_to_hsv: (h, s, v) [...] -> [..., 3]."""
    c = s * v
    dh = (h % 1.0) * 6.0
    x = c * (1.0 - jnp.abs(dh % 2.0 - 1.0))
    sector = jnp.floor(dh).astype(jnp.int32) % 6
    zero = jnp.zeros_like(c)
    r = jnp.select([sector == 0, sector == 1, sector == 2, sector == 3, sector == 4],
                   [c, x, zero, zero, x], c)
    g = jnp.select([sector == 0, sector == 1, sector == 2, sector == 3, sector == 4],
                   [x, c, c, x, zero], zero)
    b = jnp.select([sector == 0, sector == 1, sector == 2, sector == 3, sector == 4],
                   [zero, zero, x, c, c], x)
    return jnp.stack([r, g, b], axis=-1) + (v - c)[..., None]


def adjust_saturation(x, factor):
    """tf.image.adjust_saturation: HSV saturation * factor, clipped to [0, 1]."""
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb(h, jnp.clip(s * factor, 0.0, 1.0), v)


def adjust_hue(x, delta):
    """tf.image.adjust_hue: HSV hue + delta (mod 1)."""
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb(h + delta, s, v)


def to_grayscale(x):
    """Luma replicated to 3 channels."""
    y = jnp.tensordot(x, jnp.asarray(GRAY_WEIGHTS, x.dtype), axes=([-1], [0]))
    return jnp.repeat(y[..., None], 3, axis=-1)


def solarize(x, threshold: float = 0.5):
    return jnp.where(x >= threshold, 1.0 - x, x)


def blur_kernel_size(image_size: int) -> int:
    """SimCLR's kernel: 2*((S//10)//2)+1 taps (23 at 224 px, 3 at 32 px)."""
    return 2 * ((image_size // 10) // 2) + 1


def gaussian_blur(x, sigma, kernel_size: int):
    """Separable Gaussian blur of [H, W, C] with reflect padding (as augment_tf.gaussian_blur);
    sigma may be traced. Written as a sum of shifted copies: per-image kernels vmap cheaply."""
    radius = kernel_size // 2
    if radius == 0:
        return x
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-jnp.square(t) / (2.0 * jnp.square(sigma)))
    k = k / jnp.sum(k)                                                   # [K]
    h, w = x.shape[0], x.shape[1]
    y = jnp.pad(x, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    y = sum(k[i] * y[i:i + h] for i in range(kernel_size))               # [H, W, C]
    y = jnp.pad(y, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(k[i] * y[:, i:i + w] for i in range(kernel_size))


def normalize(x, how: str):
    return normalization.normalize(x, how)


# ----------------------------------------------------------------------------- random factors

def _factor_range(strength: float) -> tuple[float, float]:
    return max(0.0, 1.0 - strength), 1.0 + strength


def brightness_range(view_cfg) -> tuple[float, float]:
    s = float(view_cfg.brightness)
    if brightness_mode(view_cfg) == "additive":
        return -s, s
    return _factor_range(s)


def brightness_mode(view_cfg) -> str:
    mode = view_cfg.get("brightness_mode", "multiplicative")
    if mode not in BRIGHTNESS_MODES:
        raise ValueError(f"brightness_mode={mode!r}; use one of {BRIGHTNESS_MODES}.")
    return mode


def sample_params(key, view_cfg) -> dict:
    """Every random decision for one view: a dict of scalars (order: int32 [4])."""
    keys = jax.random.split(key, 11)
    u = lambda k, lo=0.0, hi=1.0: jax.random.uniform(k, (), jnp.float32, lo, hi)
    return {
        "jitter": u(keys[0]) < view_cfg.jitter_prob,
        "order": jnp.argsort(jax.random.uniform(keys[1], (4,))).astype(jnp.int32),
        "brightness": u(keys[2], *brightness_range(view_cfg)),
        "contrast": u(keys[3], *_factor_range(view_cfg.contrast)),
        "saturation": u(keys[4], *_factor_range(view_cfg.saturation)),
        "hue": u(keys[5], -view_cfg.hue, view_cfg.hue),
        "gray": u(keys[6]) < view_cfg.grayscale_prob,
        "blur": u(keys[7]) < view_cfg.blur_prob,
        "sigma": u(keys[8], view_cfg.blur_sigma_min, view_cfg.blur_sigma_max),
        "solarize": u(keys[9]) < view_cfg.solarize_prob,
    }


# ----------------------------------------------------------------------------- one view

def color_jitter(x, p: dict, view_cfg):
    """The four jitter ops in the order p["order"], clipping to [0, 1] after each.

    Ops with strength 0 are skipped statically (identity), as in augment_tf.
    """
    mode = brightness_mode(view_cfg)
    use = [view_cfg.brightness > 0, view_cfg.contrast > 0, view_cfg.saturation > 0,
           view_cfg.hue > 0]
    for slot in range(4):
        op = p["order"][slot]
        y = x
        if use[0]:
            y = jnp.where(op == 0, adjust_brightness(x, p["brightness"], mode), y)
        if use[1]:
            y = jnp.where(op == 1, adjust_contrast(x, p["contrast"]), y)
        if use[2] or use[3]:  # one HSV round trip serves both candidates
            h, s, v = rgb_to_hsv(x)
            s = jnp.where((op == 2) & use[2], jnp.clip(s * p["saturation"], 0.0, 1.0), s)
            h = jnp.where((op == 3) & use[3], h + p["hue"], h)
            hsv_op = ((op == 2) & use[2]) | ((op == 3) & use[3])
            y = jnp.where(hsv_op, hsv_to_rgb(h, s, v), y)
        x = jnp.clip(y, 0.0, 1.0)
    return x


def augment_image(x, p: dict, view_cfg, image_size: int):
    """float32 [S, S, 3] in [0, 1] (already cropped, resized, flipped) -> the finished view."""
    jitter = lambda t: jnp.where(p["jitter"], color_jitter(t, p, view_cfg), t)
    gray = lambda t: jnp.where(p["gray"], to_grayscale(t), t)
    if view_cfg.jitter_prob > 0 and any(view_cfg[k] > 0 for k in
                                        ("brightness", "contrast", "saturation", "hue")):
        x = jitter(gray(x)) if view_cfg.grayscale_first else gray(jitter(x))
    elif view_cfg.grayscale_prob > 0:
        x = gray(x)
    if view_cfg.blur_prob > 0:
        blurred = gaussian_blur(x, p["sigma"], blur_kernel_size(image_size))
        x = jnp.where(p["blur"], blurred, x)
    if view_cfg.solarize_prob > 0:
        x = jnp.where(p["solarize"], solarize(x), x)
    return normalize(x, view_cfg.normalize)


def view_keys(seed: int, step, view_index: int, batch_size: int):
    """[B] keys, one per global row: fold_in(fold_in(fold_in(key(seed), step), view), row)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), step), view_index)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch_size))


def augment_views(images, view_cfg, seed: int, step, view_index: int):
    """uint8 [B, S, S, 3] -> float32 [B, S, S, 3]: finish view `view_index` of a global batch."""
    x = images.astype(jnp.float32) / 255.0
    keys = view_keys(seed, step, view_index, x.shape[0])
    params = jax.vmap(lambda k: sample_params(k, view_cfg))(keys)
    out = jax.vmap(lambda im, p: augment_image(im, p, view_cfg, x.shape[1]))(x, params)
    return jax.lax.stop_gradient(out)


def augment_batch(batch: dict, aug_cfg, seed: int, step) -> dict:
    """Finish every uint8 "view{k}" of a host batch on the device (call inside the jitted step)."""
    out = dict(batch)
    for name in batch:
        if name.startswith("view"):
            k = int(name[len("view"):])
            out[name] = augment_views(batch[name], aug_cfg[name], seed, step, k)
    return out


# ----------------------------------------------------------------------------- crop and resize
# dataset.on_device: one view from uint8 [H, W, 3] and its draws u: float32 [NUM_DRAWS].

def _between(u, lo: float, hi: float):
    return lo + u * (hi - lo)


def crop_window(height: int, width: int, view_cfg, u):
    """torchvision RandomResizedCrop.get_params for one view, as `augment_tf.crop_windows`
    computes it from the same draws: int32 scalars (y, x, h, w). 10 attempts of area ~ U(min,
    max) * H * W and aspect exp(U(log r_min, log r_max)); the first whose rounded (w, h) fits
    wins and gets a uniform offset; none: centre crop with the aspect clamped into range."""
    f32 = jnp.float32
    h_f, w_f = f32(height), f32(width)
    area_lo, area_hi = f32(view_cfg.crop_area_min), f32(view_cfg.crop_area_max)
    r_lo, r_hi = f32(view_cfg.crop_aspect_min), f32(view_cfg.crop_aspect_max)
    area = h_f * w_f * (area_lo + u[D.AREA] * (area_hi - area_lo))                 # [10]
    log_lo, log_hi = jnp.log(r_lo), jnp.log(r_hi)
    aspect = jnp.exp(log_lo + u[D.ASPECT] * (log_hi - log_lo))                     # [10]
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)                       # [10]
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(ok)
    found = jnp.any(ok)
    in_ratio = w_f / h_f
    fb_w = jnp.where(in_ratio > r_hi, jnp.round(h_f * r_hi), w_f)
    fb_h = jnp.where(in_ratio < r_lo, jnp.round(w_f / r_lo), h_f)
    fb_w = jnp.clip(fb_w.astype(jnp.int32), 1, width)
    fb_h = jnp.clip(fb_h.astype(jnp.int32), 1, height)
    crop_h = jnp.where(found, h[first], fb_h)
    crop_w = jnp.where(found, w[first], fb_w)
    off = u[D.OFFSET]                                                              # [2]
    rand_y = jnp.minimum((off[0] * (height - crop_h + 1).astype(f32)).astype(jnp.int32),
                         height - crop_h)
    rand_x = jnp.minimum((off[1] * (width - crop_w + 1).astype(f32)).astype(jnp.int32),
                         width - crop_w)
    y = jnp.where(found, rand_y, (height - crop_h) // 2)
    x = jnp.where(found, rand_x, (width - crop_w) // 2)
    return y, x, crop_h, crop_w


_KEYS_A = -0.5          # Keys' cubic convolution, a = -0.5 (TF's bicubic)
_TF_CUBIC_TABLE = 1024  # TF's legacy bicubic quantises the fractional position to 1/1024
RESIZE_METHODS = ("bicubic", "bilinear")


def _kernel(method: str, d):
    d = jnp.abs(d)
    if method == "bilinear":
        return jnp.maximum(0.0, 1.0 - d)
    a = _KEYS_A
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return jnp.where(d <= 1.0, near, jnp.where(d < 2.0, far, 0.0))


def resize_weights(start, length, out_size: int, in_size: int, method: str, antialias: bool):
    """float32 [out_size, in_size]: row i holds the weights of the input pixels (only those of
    the window [start, start + length), `start`/`length` traced) that make output pixel i when
    the window is resized to out_size, exactly as tf.image.resize on the cropped window: pixel
    centres at +0.5, taps outside the window dropped and the rest renormalised (TF's
    scale_and_translate; its legacy bilinear/bicubic kernels agree), the kernel widened by the
    downscale factor with antialias, and the legacy bicubic's 1/1024 position table."""
    if method not in RESIZE_METHODS:
        raise UserError(f"resize_method={method!r} is not available with dataset.on_device; "
                        f"use one of {', '.join(RESIZE_METHODS)}.")
    length_f = length.astype(jnp.float32) if hasattr(length, "astype") else jnp.float32(length)
    inv_scale = length_f / out_size                                  # input pixels per output
    centre = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * inv_scale     # [out], window
    j = (jnp.arange(in_size) - start).astype(jnp.float32)                     # [in], window
    inside = (j >= 0) & (j < length_f)
    if method == "bicubic" and not antialias:        # resize_bicubic(half_pixel_centers=True)
        loc = centre - 0.5
        base = jnp.floor(loc)
        frac = jnp.round((loc - base) * _TF_CUBIC_TABLE) / _TF_CUBIC_TABLE
        d = j[None, :] - (base + frac)[:, None]                                 # [out, in]
    else:
        kernel_scale = jnp.maximum(inv_scale, 1.0) if antialias else 1.0
        d = (j[None, :] + 0.5 - centre[:, None]) / kernel_scale
    w = jnp.where(inside[None, :], _kernel(method, d), 0.0)
    return w / jnp.sum(w, axis=1, keepdims=True)


def crop_resize(image, window, size: int, method: str, antialias: bool):
    """uint8 [H, W, 3] and a window (y, x, h, w) -> float32 [S, S, 3] on the 0..255 scale:
    the window resized to S x S as two matrix products (full float32 precision)."""
    y, x, h, w = window
    wy = resize_weights(y, h, size, image.shape[0], method, antialias)          # [S, H]
    wx = resize_weights(x, w, size, image.shape[1], method, antialias)          # [S, W]
    return jnp.einsum("sh,hwc,tw->stc", wy, image.astype(jnp.float32), wx,
                      precision=jax.lax.Precision.HIGHEST)


def params_from_draws(u, view_cfg) -> dict:
    """One view's colour decisions from its draws, by augment_tf's formulas (see
    `sample_params` for the keys)."""
    return {
        "jitter": u[D.JITTER_APPLY] < view_cfg.jitter_prob,
        "order": jnp.argsort(u[D.ORDER]).astype(jnp.int32),
        "brightness": _between(u[D.BRIGHT], *brightness_range(view_cfg)),
        "contrast": _between(u[D.CONTRAST], *_factor_range(view_cfg.contrast)),
        "saturation": _between(u[D.SAT], *_factor_range(view_cfg.saturation)),
        "hue": _between(u[D.HUE], -view_cfg.hue, view_cfg.hue),
        "gray": u[D.GRAY] < view_cfg.grayscale_prob,
        "blur": u[D.BLUR_APPLY] < view_cfg.blur_prob,
        "sigma": _between(u[D.BLUR_SIGMA], view_cfg.blur_sigma_min, view_cfg.blur_sigma_max),
        "solarize": u[D.SOLARIZE] < view_cfg.solarize_prob,
    }


def view_from_draws(image, u, view_cfg, size: int):
    """uint8 [H, W, 3] -> the finished float32 view [S, S, 3], every decision from the draws u
    [NUM_DRAWS]: crop window, resize, flip (u < flip_prob), colour, blur, solarize, normalize."""
    window = crop_window(image.shape[0], image.shape[1], view_cfg, u)
    x = crop_resize(image, window, size, view_cfg.resize_method,
                    bool(view_cfg.get("antialias", True)))
    x = jnp.clip(x * (1.0 / 255.0), 0.0, 1.0)
    x = jnp.where(u[D.FLIP] < view_cfg.flip_prob, x[:, ::-1], x)
    return augment_image(x, params_from_draws(u, view_cfg), view_cfg, size)


def eval_view(image, size: int, crop_fraction: float, normalize_how: str = "none"):
    """`augment_tf.eval_view` in JAX: uint8 [H, W, 3] -> float32 [S, S, 3]: centre square crop of
    crop_fraction of the short side, bicubic resize (antialiased), normalize."""
    height, width = image.shape[0], image.shape[1]
    side = max(int(round(min(height, width) * crop_fraction)), 1)
    window = ((height - side) // 2, (width - side) // 2, side, side)
    x = crop_resize(image, window, size, "bicubic", True)
    return normalize(jnp.clip(x * (1.0 / 255.0), 0.0, 1.0), normalize_how)
