"""Linear evaluation and standalone kNN on a (2-step) pretrained encoder.

- MoCo's sanity check: after linear evaluation the backbone's params AND BN statistics are
  bit-identical to the pretrained checkpoint; only the linear layer changed.
- The linear-probe core agrees with scikit-learn's LogisticRegression on fixed features.
- Every example of the evaluation split is counted exactly once.
- Standalone kNN reproduces the pretraining loop's own kNN evaluation of the same checkpoint.
"""
import json
import os

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from shared_pretraining import pretrained_workdir
from tb_events import logged_tags
from tiny_configs import load_config

from simclr_jax import checkpoint, optim, parallel
from simclr_jax.errors import NonFiniteLossError
from simclr_jax.evaluate import classifier as clf
from simclr_jax.evaluate import knn_eval, linear_eval, supervised


def digits_test_split_size() -> int:
    """The embedded digits "test" split (20% of each class) counted from scikit-learn's labels."""
    y = load_digits().target
    return int(sum(n - round(0.8 * n) for n in np.bincount(y)))


def small(c, *, steps, batch_size=16):
    c.unlock()
    c.batch_size, c.num_epochs, c.num_steps = batch_size, None, steps
    c.eval.batch_size = 64
    c.log_every_steps = 2
    c.checkpoint_every_steps = 1000
    c.lock()
    return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(workdir, final metrics incl. the loop's own kNN accuracy) of a 2-step pretraining."""
    return pretrained_workdir(tmp_path_factory)


def assert_bit_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) > 0
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_linear_eval_freezes_backbone_and_counts_every_example(pretrained, tmp_path):
    pre_dir, _ = pretrained
    config = small(load_config("linear_eval.py", "simclr"), steps=4)
    config.init_from = pre_dir
    config.optimizer.base_lr = 4.0           # x 16/256: a visible step for the linear layer
    results = linear_eval.run(config, str(tmp_path))

    pre = checkpoint.restore_arrays(pre_dir)
    after = checkpoint.restore_arrays(str(tmp_path))
    assert int(after["step"]) == 4
    frozen = after["frozen"]["model"]
    assert set(frozen["params"]) == {"backbone"} and set(after["params"]) == {clf.HEAD}
    assert_bit_identical(frozen["params"]["backbone"], pre["params"]["backbone"])
    assert_bit_identical(frozen["batch_stats"]["backbone"], pre["batch_stats"]["backbone"])
    head = after["params"][clf.HEAD]["dense"]
    assert np.abs(np.asarray(head["kernel"])).max() > 0   # zero-initialised, then trained
    assert np.abs(np.asarray(head["bias"])).max() > 0

    with open(tmp_path / "linear_eval.json") as f:
        saved = json.load(f)
    assert saved["num_eval_examples"] == digits_test_split_size() == saved["eval_split_size"]
    assert saved["top1"] == results["top1"] and 0.0 <= saved["top1"] <= saved["top5"] <= 1.0
    assert saved["step"] == 4
    assert os.path.exists(tmp_path / "classifier.json")
    tags = logged_tags(tmp_path)      # progress and what the classifier was trained on
    assert tags.get("steps_per_sec") == "scalars" and tags.get("train_inputs") == "images"


def test_standalone_knn_matches_the_pretraining_evaluator(pretrained, tmp_path):
    pre_dir, summary = pretrained
    config = load_config("knn_eval.py")
    config.init_from = pre_dir
    config.eval.batch_size = 64
    results = knn_eval.run(config, str(tmp_path))
    assert results["knn_top1"] == summary["knn_top1"]
    assert results["knn_top5"] == summary["knn_top5"]
    assert results["num_test_examples"] == digits_test_split_size()
    with open(tmp_path / "knn_eval.json") as f:
        assert json.load(f)["knn_top1"] == results["knn_top1"]
    assert logged_tags(tmp_path).get("knn_neighbours") == "images"


class Identity(nn.Module):
    """Backbone stand-in: the 'images' are already feature vectors [B, D]."""

    @nn.compact
    def __call__(self, x, train):
        return x


def feature_batches(x, y, batch_size, *, mesh, train=False, seed=0):
    """Train (shuffled, full batches, forever) or eval (one pass, padded + mask) batches."""
    if not train:
        n = len(x)
        pad = -n % batch_size
        xp = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
        yp = np.concatenate([y, -np.ones(pad, y.dtype)])
        mask = np.arange(n + pad) < n
        for i in range(0, n + pad, batch_size):
            s = slice(i, i + batch_size)
            yield parallel.to_global(mesh, {"image": xp[s], "label": yp[s], "mask": mask[s]})
        return
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch_size + 1, batch_size):
            s = order[i:i + batch_size]
            yield parallel.to_global(mesh, {"image": x[s], "label": y[s]})


def test_linear_probe_agrees_with_logistic_regression():
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    train_idx, test_idx = order[:1400], order[1400:]
    mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 1.0
    x = (x - mean) / std

    reference = LogisticRegression(max_iter=2000).fit(x[train_idx], y[train_idx])
    ref_acc = reference.score(x[test_idx], y[test_idx])

    mesh = parallel.make_mesh()
    module = clf.Classifier(backbone=Identity(), num_classes=10, zero_init=True)
    rng = jax.random.PRNGKey(0)
    head = clf.linear_head(10, zero_init=True).init(rng, jnp.zeros((1, x.shape[1])))["params"]
    steps, batch = 300, 64
    opt = ml_collections.ConfigDict(dict(name="sgd", momentum=0.9, nesterov=True,
                                         weight_decay=0.0))
    schedule = optim.warmup_cosine_schedule(0.1, steps)
    tx = optim.make_optimizer(opt, schedule)
    state = linear_eval.create_state(module, {"params": {clf.HEAD: head}, "batch_stats": {}}, tx,
                                rng, mesh)
    task = linear_eval.linear_task(module)
    _, results = supervised.fit(
        state, train_step=supervised.make_train_step(mesh, task, tx, schedule),
        eval_step=supervised.make_eval_step(mesh, task),
        train_batches_from=lambda start: feature_batches(x[train_idx], y[train_idx], batch,
                                                         mesh=mesh, train=True),
        eval_batches_fn=lambda: feature_batches(x[test_idx], y[test_idx], batch, mesh=mesh),
        total_steps=steps, log_every=100)
    assert results["num_eval_examples"] == len(test_idx)
    assert ref_acc > 0.9
    assert abs(results["top1"] - ref_acc) <= 0.025, (results["top1"], ref_acc)

    # The same loop at an absurd learning rate stops with the pretraining loop's message
    # instead of evaluating (or saving) a non-finite classifier.
    huge = optim.make_optimizer(opt, 1e38)
    rng = jax.random.PRNGKey(1)               # the first run's state (rng included) was donated
    head = clf.linear_head(10, zero_init=True).init(rng, jnp.zeros((1, x.shape[1])))["params"]
    with pytest.raises(NonFiniteLossError, match="non-finite loss or gradient between steps"):
        supervised.fit(
            linear_eval.create_state(module, {"params": {clf.HEAD: head}, "batch_stats": {}}, huge,
                                rng, mesh),
            train_step=supervised.make_train_step(mesh, task, huge, lambda _: 1e38),
            eval_step=supervised.make_eval_step(mesh, task),
            train_batches_from=lambda start: feature_batches(x[train_idx], y[train_idx], batch,
                                                             mesh=mesh, train=True),
            eval_batches_fn=lambda: feature_batches(x[test_idx], y[test_idx], batch, mesh=mesh),
            total_steps=20, log_every=10)
