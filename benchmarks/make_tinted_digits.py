"""The embedded digits painted in random colours (an npz): data on which a random encoder's kNN
depends on colour, not shape, made to test whether learning checks can tell learning from
generic training.

    python benchmarks/make_tinted_digits.py --out /tmp/tinted_digits.npz
    python -m simclr_jax.main --config configs/FILE.py:PRESET,runlocal --workdir DIR \
        --config.dataset.name=npz:/tmp/tinted_digits.npz \
        --config.dataset.train_split='train[:80%]' \
        --config.dataset.knn_train_split='train[:80%]' \
        --config.dataset.knn_test_split='train[80%:]'

Why: on the plain gray digits a random ResNet is already a good digit classifier, and any
training moves its kNN by hundredths, with or without positive pairs (BENCHMARKS.md, "Negative
controls"). Here each image gets its own background and stroke colour (random hue and
saturation, light strokes on a dark ground), so init's kNN falls to 0.34-0.41. The hope was that
only a run learning from its views would drop the colour. It did not hold: a run with no
positive pair (`break_positive_pairs`) beat learned SimCLR (0.387 vs 0.373, seed 0; 0.460 vs
0.379 with full-strength jitter), since pulling random pairs together removes their largest
difference, the colour (BENCHMARKS.md, "Tinted digits").

The colours are a pure function of `seed` and the image's index; labels are the digits'.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def tinted_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [1797, 32, 32, 3], int32 [1797]): image = mask * stroke colour + (1 - mask) *
    background colour, the two colours with independent random hues and saturations, light
    strokes (value 0.75-1) on a dark ground (0.1-0.4) as in the gray digits, so the strokes stay
    visible in gray and no view has to undo a polarity."""
    from simclr_jax.data import embedded
    from simclr_jax.data.augment_jax import hsv_to_rgb

    def colours(h, s, v):                                                   # [N] each -> [N, 3]
        return np.asarray(hsv_to_rgb(h, s, v), np.float64)

    gray, labels = embedded.digits_arrays()
    mask = gray[..., :1].astype(np.float64) / 255.0                         # [N, 32, 32, 1]
    n = len(labels)
    rng = np.random.default_rng(seed)
    light = colours(rng.random(n), rng.uniform(0.4, 1.0, n), rng.uniform(0.75, 1.0, n))
    dark = colours(rng.random(n), rng.uniform(0.4, 1.0, n), rng.uniform(0.1, 0.4, n))
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
