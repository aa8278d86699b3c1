"""Class-balanced labelled subsets: exact per-class counts, determinism, nesting, errors."""
import numpy as np
import pytest

from simclr_jax.evaluate.subsets import class_balanced_subset


def _imbalanced_labels(seed=0):
    # Class sizes 45, 10, 3, 1, shuffled so classes are interleaved.
    labels = np.repeat([0, 1, 2, 3], [45, 10, 3, 1])
    return np.random.default_rng(seed).permutation(labels)


def _counts(labels, idx):
    return {c: int(np.sum(labels[idx] == c)) for c in np.unique(labels)}


@pytest.mark.parametrize("fraction,want", [
    # Worked by hand: round half up, at least one per class.
    (0.1, {0: 5, 1: 1, 2: 1, 3: 1}),    # 4.5 -> 5, 1.0, 0.3 -> 1, 0.1 -> 1
    (0.5, {0: 23, 1: 5, 2: 2, 3: 1}),   # 22.5 -> 23, 5, 1.5 -> 2, 0.5 -> 1
    (0.3, {0: 14, 1: 3, 2: 1, 3: 1}),   # 13.5 -> 14, 3, 0.9 -> 1, 0.3 -> 1
    (1.0, {0: 45, 1: 10, 2: 3, 3: 1}),
])
def test_exact_per_class_counts(fraction, want):
    labels = _imbalanced_labels()
    idx = class_balanced_subset(labels, fraction, seed=1)
    assert _counts(labels, idx) == want
    assert len(idx) == sum(want.values())


def test_half_rounds_up_despite_binary_floats():
    # 0.29 * 50 == 14.499999999999998 in float64, but the user asked for 29% of 50 = 14.5 -> 15.
    labels = np.zeros(50, np.int64)
    assert len(class_balanced_subset(labels, 0.29, seed=0)) == 15
    assert len(class_balanced_subset(np.zeros(15, np.int64), 0.7, seed=0)) == 11  # 10.5 -> 11


def test_per_class_count():
    labels = _imbalanced_labels()
    idx = class_balanced_subset(labels[labels < 3], per_class=3, seed=0)
    assert _counts(labels[labels < 3], idx) == {0: 3, 1: 3, 2: 3}
    with pytest.raises(ValueError, match="fewer examples"):
        class_balanced_subset(labels, per_class=2, seed=0)  # class 3 has one example


def test_sorted_unique_int64_in_range():
    labels = _imbalanced_labels()
    idx = class_balanced_subset(labels, 0.4, seed=5)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted and no duplicates
    assert idx.min() >= 0 and idx.max() < len(labels)
    np.testing.assert_array_equal(class_balanced_subset(labels, 1.0, seed=5),
                                  np.arange(len(labels)))


def test_deterministic_and_seed_dependent():
    labels = np.repeat(np.arange(5), 40)
    a = class_balanced_subset(labels, 0.1, seed=3)
    b = class_balanced_subset(labels.copy(), 0.1, seed=3)
    c = class_balanced_subset(labels, 0.1, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_smaller_fraction_is_nested_in_larger():
    labels = _imbalanced_labels(2)
    small = class_balanced_subset(labels, 0.1, seed=9)
    large = class_balanced_subset(labels, 0.5, seed=9)
    assert set(small.tolist()) <= set(large.tolist())


def test_class_choice_independent_of_other_classes():
    labels = np.repeat([0, 1], 20)
    more = np.concatenate([labels, np.full(10, 7)])
    a = class_balanced_subset(labels, 0.25, seed=11)
    b = class_balanced_subset(more, 0.25, seed=11)
    np.testing.assert_array_equal(a, b[b < 40])


def test_roughly_uniform_within_class():
    # 300 seeds, 3 of 10 examples each: every example expected 90 times.
    labels = np.zeros(10, np.int64)
    hits = np.zeros(10)
    for seed in range(300):
        hits[class_balanced_subset(labels, 0.3, seed=seed)] += 1
    assert hits.sum() == 900
    assert hits.min() > 55 and hits.max() < 125


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), "0.1"])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
        class_balanced_subset(np.arange(10) % 2, fraction, seed=0)


def test_other_errors():
    labels = np.arange(10) % 2
    with pytest.raises(ValueError, match="exactly one"):
        class_balanced_subset(labels, seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        class_balanced_subset(labels, 0.5, per_class=2, seed=0)
    with pytest.raises(ValueError, match="per_class"):
        class_balanced_subset(labels, per_class=0, seed=0)
    with pytest.raises(ValueError, match="1-D"):
        class_balanced_subset(labels.reshape(2, 5), 0.5, seed=0)
    with pytest.raises(ValueError, match="1-D"):
        class_balanced_subset(np.array([], np.int64), 0.5, seed=0)
    with pytest.raises(ValueError, match="unlabelled"):
        class_balanced_subset(np.array([0, 1, -1]), 0.5, seed=0)
    with pytest.raises(ValueError, match="integer class ids"):
        class_balanced_subset(np.array([0.0, 1.0]), 0.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        class_balanced_subset(labels, 0.5, seed=-1)
