"""Weighted kNN (InstDisc) against a loop-by-loop numpy reference, and exact feature extraction."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax.evaluate import knn
from simclr_jax.evaluate.knn import (extract_features, knn_accuracy, knn_classify,
                                     nearest_neighbours, neighbours_grid)
from simclr_jax.models.norm import BatchNorm


def reference_knn(train, train_labels, test, num_classes, k, temperature):
    """Brute force, one test row and one train row at a time, float64.

    Returns (predictions [M], rankings [M] of all classes by score, ties -> lower index).
    """
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    preds, rankings = [], []
    for q in test:
        q_norm = math.sqrt(sum(v * v for v in q))
        sims = []
        for x in train:
            x_norm = math.sqrt(sum(v * v for v in x))
            dot = sum(a * b for a, b in zip(q, x))
            sims.append(dot / (max(q_norm, 1e-12) * max(x_norm, 1e-12)))
        neighbours = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:k]
        scores = [0.0] * num_classes
        for j in neighbours:
            scores[int(train_labels[j])] += math.exp(sims[j] / temperature)
        ranking = sorted(range(num_classes), key=lambda c: (-scores[c], c))
        preds.append(ranking[0])
        rankings.append(ranking)
    return np.array(preds), rankings


CASES = [  # (N, M, D, k, T, classes, chunk_size)
    (50, 37, 8, 200, 0.1, 5, 16),     # k > N; M not a multiple of the chunk
    (300, 130, 16, 20, 0.07, 10, 64),
    (100, 7, 4, 1, 0.5, 3, 1024),     # k = 1, M < chunk
    (64, 33, 32, 64, 0.1, 7, 32),     # k == N
]


@pytest.mark.parametrize("n,m,d,k,t,c,chunk", CASES)
def test_knn_classify_matches_brute_force(n, m, d, k, t, c, chunk):
    rng = np.random.default_rng(n * 1000 + m)
    train = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 3, size=(n, 1))
    test = rng.normal(size=(m, d)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    pred = knn_classify(train, labels, test, c, k=k, temperature=t, chunk_size=chunk)
    want, _ = reference_knn(train, labels, test, c, k, t)
    assert pred.dtype == np.int32 and pred.shape == (m,)
    np.testing.assert_array_equal(pred, want)


@pytest.mark.parametrize("n,m,d,k,t,c,chunk", CASES)
def test_knn_accuracy_matches_brute_force(n, m, d, k, t, c, chunk):
    rng = np.random.default_rng(7 + n)
    train = rng.normal(size=(n, d)).astype(np.float32)
    test = rng.normal(size=(m, d)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    test_labels = rng.integers(0, c, size=m)
    got = knn_accuracy(train, labels, test, test_labels, c, k=k, temperature=t, chunk_size=chunk)
    preds, rankings = reference_knn(train, labels, test, c, k, t)
    assert got["top1"] == pytest.approx(np.mean(preds == test_labels), abs=1e-12)
    if c >= 5:
        top5 = np.mean([y in r[:5] for y, r in zip(test_labels, rankings)])
        assert got["top5"] == pytest.approx(top5, abs=1e-12)
    else:
        assert set(got) == {"top1"}


def test_hand_built_example():
    # Direction matters, length does not: [10, 0] is the same neighbour as [1, 0].
    train = np.array([[1, 0], [10, 0], [0, 1], [0, 2], [0, 3]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    test = np.array([[1, 0], [1, 1], [0, 5]], np.float32)
    # T=0.1: class 0 gets 2*e^10 for [1,0]; [1,1] is equidistant so 3 votes beat 2; [0,5] -> 1.
    np.testing.assert_array_equal(knn_classify(train, labels, test, 2, k=5, temperature=0.1),
                                  [0, 1, 1])
    # A huge temperature makes every weight ~1: plain majority vote, 3 x class 1 wins.
    np.testing.assert_array_equal(knn_classify(train, labels, test, 2, k=5, temperature=1e6),
                                  [1, 1, 1])
    # k=2: only the two class-0 vectors are neighbours of [1, 0].
    assert knn_classify(train, labels, test[:1], 2, k=2, temperature=1e6)[0] == 0


def test_ties_go_to_lowest_class_and_lowest_train_index():
    train = np.array([[1, 0], [0, 1]], np.float32)
    test = np.array([[1, 1]], np.float32)  # equal similarity to both -> equal class scores
    assert knn_classify(train, np.array([1, 0]), test, 2, k=2)[0] == 0
    assert knn_classify(train, np.array([2, 1]), test, 3, k=2)[0] == 1
    # Equal similarities in the neighbour search: the lower train index is the neighbour.
    dup = np.array([[1, 0], [2, 0]], np.float32)
    assert knn_classify(dup, np.array([1, 0]), np.array([[1, 0]], np.float32), 2, k=1)[0] == 1


def test_last_chunk_padding_compiles_once():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=40)
    before = knn._knn_chunk._cache_size()
    knn_classify(train, labels, rng.normal(size=(37, 6)).astype(np.float32), 3, k=11,
                 chunk_size=16)  # chunks of 16, 16, 5 (+11 padding)
    assert knn._knn_chunk._cache_size() == before + 1


def test_empty_test_set_and_errors():
    train = np.ones((4, 3), np.float32)
    labels = np.array([0, 1, 0, 1])
    assert knn_classify(train, labels, np.zeros((0, 3), np.float32), 2).shape == (0,)
    with pytest.raises(ValueError, match="labels must lie in"):
        knn_classify(train, np.array([0, 1, 2, 1]), train, 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        knn_classify(train, np.array([0, -1, 0, 1]), train, 2)
    with pytest.raises(ValueError, match="feature dims differ"):
        knn_classify(train, labels, np.ones((2, 5), np.float32), 2)
    with pytest.raises(ValueError, match="temperature"):
        knn_classify(train, labels, train, 2, temperature=0.0)
    with pytest.raises(ValueError, match="k must be"):
        knn_classify(train, labels, train, 2, k=0)
    with pytest.raises(ValueError, match="empty"):
        knn_classify(np.zeros((0, 3), np.float32), np.zeros((0,), int), train, 2)


# ---------------------------------------------------------------- feature extraction

def _eval_batches(mesh, images, labels, global_batch):
    """Global batches like pipeline.eval_batches: the last one padded, padding masked out."""
    sharding = NamedSharding(mesh, P("data"))
    n = len(labels)
    for start in range(0, n, global_batch):
        img = images[start:start + global_batch]
        lab = labels[start:start + global_batch]
        real = len(lab)
        pad = global_batch - real
        img = np.concatenate([img, np.full((pad,) + img.shape[1:], -7.0, img.dtype)])
        lab = np.concatenate([lab, np.zeros(pad, lab.dtype)])
        mask = np.arange(global_batch) < real
        yield {k: jax.make_array_from_process_local_data(sharding, v)
               for k, v in {"image": img, "label": lab, "mask": mask}.items()}


def test_extract_features_every_example_once_in_order():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert mesh.devices.size == 8
    n = 37
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                             (n, 4, 4, 3)).copy()  # image i is filled with the value i
    labels = (np.arange(n) * 3 % 5).astype(np.int32)

    @jax.jit
    def feature_fn(x):  # [B, 4, 4, 3] -> [B, 2]: (i, 2i + 1)
        v = x[:, 0, 0, 0]
        return jnp.stack([v, 2 * v + 1], axis=1)

    feats, got_labels = extract_features(feature_fn, _eval_batches(mesh, images, labels, 16))
    idx = np.arange(n, dtype=np.float32)
    assert feats.dtype == np.float32 and got_labels.dtype == np.int32
    np.testing.assert_array_equal(feats, np.stack([idx, 2 * idx + 1], axis=1))
    np.testing.assert_array_equal(got_labels, labels)


def test_extract_features_without_mask_keeps_all_rows_and_rejects_empty():
    batches = [{"image": np.ones((4, 2), np.float32) * i, "label": np.arange(4)} for i in range(2)]
    feats, labels = extract_features(lambda x: jnp.asarray(x) * 2, batches)
    np.testing.assert_array_equal(feats, np.repeat([[0, 0], [2, 2]], 4, axis=0))
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="no batches"):
        extract_features(lambda x: x, [])


def test_nearest_neighbours_are_the_most_cosine_similar_bank_rows():
    rng = np.random.default_rng(4)
    bank, test = rng.normal(size=(40, 6)), rng.normal(size=(5, 6))
    got = nearest_neighbours(bank * 7.0, test, k=4)       # a scale changes no cosine
    for row, idx in zip(test, got):
        cos = [float(row @ b) / (np.linalg.norm(row) * np.linalg.norm(b)) for b in bank]
        assert list(idx) == sorted(range(len(bank)), key=lambda j: -cos[j])[:4]


def test_neighbours_grid_frames_matches_green_and_mismatches_red():
    test = np.full((2, 4, 4, 3), 0.25, np.float32)
    bank = np.full((2, 3, 4, 4, 3), 0.75, np.float32)
    grid = neighbours_grid(test, np.array([1, 2]), bank, np.array([[1, 0, 1], [2, 2, 3]]))
    assert grid.shape == (1, 2 * 8, 4 * 8, 3)
    corner = lambda r, c: tuple(grid[0, r * 8, c * 8])  # noqa: E731  top-left pixel of a tile
    assert corner(0, 0) == (0.5, 0.5, 0.5)                                # the test image
    assert [corner(0, c)[1] > 0.5 for c in (1, 2, 3)] == [True, False, True]
    assert [corner(1, c)[0] > 0.5 for c in (1, 2, 3)] == [False, False, True]
    np.testing.assert_array_equal(grid[0, 2:6, 2:6], 0.25)               # pixels unchanged


# ----------------------------------------------------------------------------- BN at init

class _OneBatchNorm(nn.Module):
    """x [B, H, W, C] -> BN(x): the smallest encoder with running statistics."""
    momentum: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        return BatchNorm(momentum=self.momentum, use_scale=False, use_bias=False)(
            x, use_running_average=not train)

    def encode(self, x, train: bool = False):
        return self(x, train=train)


@pytest.mark.parametrize("momentum", [0.9, 0.997])
def test_bank_batch_statistics_are_the_mean_of_whole_batches_whatever_the_momentum(momentum):
    """The re-estimated statistics are numpy's mean over whole batches of each batch's mean and
    biased variance; the padded last batch (padding -7) does not count, unless it is the only
    batch (then its padding, repeats of its last example in the real pipeline, does)."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    images = np.random.default_rng(0).normal(3.0, 2.0, size=(40, 2, 2, 5)).astype(np.float32)
    labels = np.zeros(40, np.int32)
    network = _OneBatchNorm(momentum)
    stats = network.init(jax.random.PRNGKey(0), images[:16])["batch_stats"]
    update = knn.make_bn_update_fn(network, mesh)
    got = knn.mean_batch_statistics(update, {}, stats, _eval_batches(mesh, images, labels, 16),
                                    max_batches=20)["BatchNorm_0"]
    whole = images[:32].reshape(2, 16 * 2 * 2, 5)                        # 2 whole batches
    np.testing.assert_allclose(got["mean"], whole.mean(1).mean(0), rtol=1e-4)  # 1 - m: 3e-3
    np.testing.assert_allclose(got["var"], whole.var(1).mean(0), rtol=1e-4)
    first = knn.mean_batch_statistics(update, {}, stats, _eval_batches(mesh, images, labels, 16),
                                      max_batches=1)["BatchNorm_0"]
    np.testing.assert_allclose(first["mean"], whole[0].mean(0), rtol=1e-4)
    only = knn.mean_batch_statistics(update, {}, stats,
                                     _eval_batches(mesh, images[:12], labels[:12], 16),
                                     max_batches=20)["BatchNorm_0"]
    padded = np.concatenate([images[:12], np.full((4, 2, 2, 5), -7.0, np.float32)])
    np.testing.assert_allclose(only["mean"], padded.reshape(-1, 5).mean(0), rtol=1e-4)
    assert knn.mean_batch_statistics(update, {}, {}, [], max_batches=20) == {}


def test_a_resnet_at_init_with_bank_statistics_infers_as_it_trains_on_that_batch():
    """What the statistics are for: the encoder at init, scored in inference mode, normalises
    as a training step does (train-mode features of the same batch), not with its initial
    (0, 1), through every BN layer of a ResNet."""
    from simclr_jax.methods.network import EncoderNetwork
    from simclr_jax.models import build_backbone
    mesh = Mesh(np.array(jax.devices()), ("data",))
    network = EncoderNetwork(backbone=build_backbone(
        {"name": "resnet", "depth": 10, "width": 0.125, "stem": "cifar"}))
    images = np.random.default_rng(1).uniform(size=(16, 8, 8, 3)).astype(np.float32)
    variables = network.init(jax.random.PRNGKey(0), images)
    stats = knn.mean_batch_statistics(
        knn.make_bn_update_fn(network, mesh), variables["params"], variables["batch_stats"],
        _eval_batches(mesh, images, np.zeros(16, np.int32), 16), max_batches=1)
    trained, _ = network.apply(variables, images, train=True, mutable=["batch_stats"])
    at_init = network.apply(variables, images)                           # (0, 1) statistics
    scored = network.apply({"params": variables["params"], "batch_stats": stats}, images)
    np.testing.assert_allclose(scored, trained, rtol=2e-3, atol=2e-4)
    assert not np.allclose(at_init, trained, rtol=0.1, atol=0.01)
