"""The embedded digits painted in random colours: a dataset on which a kNN rises only if the
encoder learned the invariance its views teach (colour), so learning checks can fail.

    python benchmarks/make_tinted_digits.py --out /tmp/tinted_digits.npz
    python -m simclr_jax.main --config configs/FILE.py:PRESET,runlocal --workdir DIR \
        --config.dataset.name=npz:/tmp/tinted_digits.npz \
        --config.dataset.train_split='train[:80%]' \
        --config.dataset.knn_train_split='train[:80%]' \
        --config.dataset.knn_test_split='train[80%:]'

Why: on the plain gray digits a random ResNet is already a good digit classifier, and any
training moves its kNN by hundredths, with or without positive pairs (BENCHMARKS.md, "Negative
controls"). Here each image gets its own background and stroke colour (random hue, saturation,
light strokes on a dark ground), so the colours, not the strokes, dominate a random encoder's
features and its kNN sits near chance. The SSL views differ in colour (jitter, grayscale) but
share the strokes: an encoder that learns from its positive pairs drops the colour and its kNN
rises; a run without positive pairs (`break_positive_pairs`) has no reason to.

The colours are a pure function of `seed` and the image's index; labels are the digits'.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, all in [0, 1]; h, s, v [N] -> [N, 3]."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in
                      [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]], 0)
    return table[i, np.arange(len(h))]                                      # [N, 3]


def tinted_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [1797, 32, 32, 3], int32 [1797]): image = mask * stroke colour + (1 - mask) *
    background colour, the two colours with independent random hues and saturations, light
    strokes (value 0.75-1) on a dark ground (0.1-0.4) as in the gray digits, so the strokes stay
    visible in gray and no view has to undo a polarity."""
    from simclr_jax.data import embedded

    gray, labels = embedded.digits_arrays()
    mask = gray[..., :1].astype(np.float64) / 255.0                         # [N, 32, 32, 1]
    n = len(labels)
    rng = np.random.default_rng(seed)
    light = _hsv_to_rgb(rng.random(n), rng.uniform(0.4, 1.0, n), rng.uniform(0.75, 1.0, n))
    dark = _hsv_to_rgb(rng.random(n), rng.uniform(0.4, 1.0, n), rng.uniform(0.1, 0.4, n))
    image = mask * light[:, None, None, :] + (1.0 - mask) * dark[:, None, None, :]
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8), labels


def write_npz(path: str, seed: int = 0) -> str:
    images, labels = tinted_digits(seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, images=images, labels=labels)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(write_npz(a.out, a.seed))


if __name__ == "__main__":
    main()
