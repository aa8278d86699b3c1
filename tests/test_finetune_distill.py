"""Semi-supervised fine-tuning and distillation on a (2-step) pretrained digits encoder.

- Labelled subsets: deterministic for a seed, class-balanced, exactly the requested fraction.
- ft_proj_selector=k puts the classifier on the k-th layer output of the pretrained projector.
- Distillation loss equals its closed form; the student's agreement with the teacher rises;
  the teacher never changes; every evaluation example is counted exactly once.
"""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits
from shared_pretraining import pretrained_workdir
from tiny_configs import load_config

from simclr_jax import checkpoint
from simclr_jax.data import sources
from simclr_jax.evaluate import classifier as clf
from simclr_jax.evaluate import distill, finetune
from simclr_jax.models import heads

FRACTION = 0.25


def digits_test_split_size() -> int:
    y = load_digits().target
    return int(sum(n - round(0.8 * n) for n in np.bincount(y)))


def small(c, *, steps, batch_size=16, lr=0.1):
    """Test size; plain SGD and mild crops so 30 steps learn something on 16 px digits."""
    c.unlock()
    c.batch_size, c.num_epochs, c.num_steps = batch_size, None, steps
    c.warmup_epochs = 0.0
    c.optimizer.name, c.optimizer.nesterov, c.optimizer.weight_decay = "sgd", True, 0.0
    c.optimizer.lr_scaling, c.optimizer.base_lr = "none", lr
    c.aug.view1.crop_area_min, c.aug.view1.flip_prob = 0.8, 0.0
    c.eval.batch_size = 64
    c.log_every_steps = 5
    c.checkpoint_every_steps = 1000
    if "model" in c:
        c.model.depth, c.model.width, c.model.stem = 10, 0.125, "cifar"
    c.lock()
    return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return pretrained_workdir(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finetune"))
    config = small(load_config("finetune.py", "cifar10_10pct"), steps=30)
    config.init_from = pretrained
    config.dataset.name = config.dataset.train_split = config.dataset.eval_split = None
    config.finetune.label_fraction = FRACTION
    results = finetune.run(config, workdir)
    return workdir, results


# ----------------------------------------------------------------------------- subsets

def expected_counts(labels, fraction):
    """Per class: round half up, at least one."""
    return {int(c): max(1, int(np.floor(fraction * n + 0.5))) for c, n in
            zip(*np.unique(labels, return_counts=True))}


def test_labelled_subset_is_deterministic_balanced_and_exact():
    source = sources.get_source("digits", "train")
    labels = np.asarray(source.labels)
    for fraction in (0.01, 0.1, 0.5):
        sub = finetune.labelled_subset(source, fraction, seed=0)
        got = dict(zip(*map(lambda a: a.tolist(), np.unique(sub.labels, return_counts=True))))
        want = expected_counts(labels, fraction)
        assert got == want and sub.num_examples == sum(want.values()) == len(sub.images)
        again = finetune.labelled_subset(source, fraction, seed=0)
        assert np.array_equal(sub.images, again.images)
        assert np.array_equal(sub.labels, again.labels)
    # Every kept example is an example of the source with its own label, none twice.
    sub = finetune.labelled_subset(source, 0.1, seed=0)
    rows = {img.tobytes(): int(y) for img, y in zip(source.images, labels)}
    assert len({img.tobytes() for img in sub.images}) == sub.num_examples
    assert all(rows[img.tobytes()] == int(y) for img, y in zip(sub.images, sub.labels))
    other = finetune.labelled_subset(source, 0.1, seed=1)
    assert not np.array_equal(sub.images, other.images)
    assert finetune.labelled_subset(source, None, seed=0) is source


def test_labelled_subset_drops_unlabelled_examples():
    source = sources.get_source("digits", "train")
    labels = np.asarray(source.labels).copy()
    labels[::3] = -1
    partly = dataclasses.replace(source, labels=labels)
    sub = finetune.labelled_subset(partly, 0.5, seed=0)
    assert (sub.labels >= 0).all()
    want = expected_counts(labels[labels >= 0], 0.5)
    got = dict(zip(*map(lambda a: a.tolist(), np.unique(sub.labels, return_counts=True))))
    assert got == want


# ----------------------------------------------------------------------------- projector

@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_projector_prefix_is_layer_k_of_the_pretrained_head(k):
    full = heads.simclr_projector(num_layers=3, hidden_dim=8, out_dim=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
    variables = full.init(jax.random.PRNGKey(1), x, train=False)
    # Non-trivial BN statistics, so the running averages must be grafted correctly too.
    variables = {"params": variables["params"], "batch_stats": jax.tree.map(
        lambda v: v + 0.3 * jnp.arange(v.shape[0]), variables["batch_stats"])}
    outputs = full.apply(variables, x, train=False, return_all=True)   # [input, h1, h2, out]
    prefix, relu = clf.projector_prefix(full, k)
    if k == 0:
        assert prefix is None
        return
    shapes = jax.eval_shape(lambda: prefix.init(jax.random.PRNGKey(2), x, train=False))
    grafted = {c: clf.graft(dict(shapes[c]), variables[c], c)
               for c in ("params", "batch_stats")}
    y = prefix.apply(grafted, x, train=False)
    y = jax.nn.relu(y) if relu else y
    np.testing.assert_allclose(np.asarray(y), np.asarray(outputs[k]), rtol=1e-6, atol=1e-6)
    assert relu == (k < 3)


# ----------------------------------------------------------------------------- fine-tuning

def test_finetune_result_and_checkpoint(pretrained, finetuned):
    workdir, results = finetuned
    with open(f"{workdir}/finetune.json") as f:
        saved = json.load(f)
    assert saved["num_eval_examples"] == digits_test_split_size()
    train_labels = np.asarray(sources.get_source("digits", "train").labels)
    assert saved["num_labelled_examples"] == sum(expected_counts(train_labels, FRACTION).values())
    assert saved["step"] == 30 and 0.0 <= saved["top1"] <= saved["top5"] <= 1.0
    module, variables, meta = clf.load(workdir)
    # SimCLRv2 ft_proj_selector=1: the first projector layer is kept (and fine-tuned).
    assert meta["ft_proj_selector"] == 1
    assert set(variables["params"]["projector"]) == {"dense0", "bn0"}
    pre = checkpoint.restore_arrays(pretrained)
    moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree.leaves(variables["params"]["backbone"]),
        jax.tree.leaves(pre["params"]["backbone"]))]
    assert any(moved)                          # the whole network is fine-tuned


# ----------------------------------------------------------------------------- distillation

def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_distillation_objective_closed_form(alpha):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(12, 7)) * 3
    t = rng.normal(size=(12, 7)) * 3
    labels = rng.integers(0, 7, 12)
    labels[[1, 4, 9]] = -1                      # unlabelled: no labelled term
    tau = 0.5
    p_t = np.exp(log_softmax(t / tau))
    want_distill = tau ** 2 * np.mean(-(p_t * log_softmax(s / tau)).sum(-1))  # colab's T^2
    lab = labels >= 0
    want_ce = np.mean(-log_softmax(s)[np.flatnonzero(lab), labels[lab]])
    want = alpha * want_distill + (1 - alpha) * want_ce
    got, metrics = distill.objective(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32),
                                     jnp.asarray(labels), temperature=tau, alpha=alpha)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["distill_loss"]), want_distill, rtol=1e-5)


def test_student_agreement_rises_and_teacher_is_untouched(finetuned, tmp_path):
    teacher_dir, ft_results = finetuned
    config = small(load_config("distill.py", "cifar10"), steps=30, lr=0.3)
    config.teacher_from = teacher_dir
    results = distill.run(config, str(tmp_path))
    with open(tmp_path / "distill.json") as f:
        saved = json.load(f)
    assert saved["num_eval_examples"] == digits_test_split_size()
    # Rises, and well above what always predicting the teacher's commonest class gives.
    assert saved["agreement"] >= saved["agreement_init"] + 0.2, saved
    assert saved["agreement"] >= saved["agreement_constant_baseline"] + 0.15, saved
    # The teacher scored on the same split gives the fine-tuning run's own top-1.
    assert saved["teacher_top1"] == saved["teacher_top1_init"] == ft_results["top1"]
    _, teacher_vars, _ = clf.load(teacher_dir)
    after = checkpoint.restore_arrays(str(tmp_path))["frozen"]["teacher"]
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(teacher_vars)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert results["agreement"] == saved["agreement"]


def test_distillation_student_can_start_from_a_pretrained_backbone(pretrained, finetuned,
                                                                   tmp_path):
    """`--config.init_from` for distill: the student's backbone starts as the pretraining
    checkpoint's online backbone (one step at learning rate 0 keeps it), its head fresh."""
    config = small(load_config("distill.py", "cifar10"), steps=1, lr=0.0)
    config.unlock()
    config.teacher_from, config.init_from = finetuned[0], pretrained
    distill.run(config, str(tmp_path))
    student = checkpoint.restore_arrays(str(tmp_path))["params"]
    source = checkpoint.restore_arrays(pretrained)["params"]["backbone"]
    leaves = jax.tree_util.tree_leaves_with_path(source)
    assert leaves and jax.tree.structure(student["backbone"]) == jax.tree.structure(source)
    for path, leaf in leaves:
        got = student["backbone"]
        for k in path:
            got = got[k.key]
        np.testing.assert_array_equal(got, leaf, err_msg=jax.tree_util.keystr(path))
