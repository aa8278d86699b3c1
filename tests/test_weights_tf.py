"""SimCLR v1/v2's TensorFlow checkpoints (issue 20): the TF1 checkpoints (with the EMA copy of
SimCLR v2's releases), TF2 training checkpoints and TF2 SavedModels of google-research/simclr
import into our ResNet and compute what the official ResNet computes on the same weights.

The reference is `simclr_resnet`, a transcription of the official forward pass in TensorFlow ops
(tf2/resnet.py; TF1's resnet.py computes the same): fixed padding before strided convs and SAME
otherwise, the SAME 3x3/2 stem max pool, a projection on every stage's first block, the SK conv
and ResNet-D stem and shortcuts of SimCLR v2, BN in inference mode with epsilon 1e-5. It draws
every variable as it creates it, so the variables are named as the official code names them:
TF1's tf.layers numbering (`base_model/conv2d_7/kernel`, `batch_normalization_7/gamma`: one
counter per layer type, in creation order, model.py's `base_model` scope) and TF2's object
paths (tf2/resnet.py's attributes and list positions, e.g.
`model/resnet_model/block_groups/1/layers/0/projection_layers/0/conv2d/kernel`). The files are
then written as the official code writes them: tf.train.Checkpoint(model=..., global_step=...)
with a CheckpointManager (tf2/run.py), tf.saved_model.save of a module whose `.model` is the
model and which also lists its trainable variables (tf2/run.py build_saved_model), and a
name-based checkpoint (TF1 Saver's format) with `ema_model/` copies, Momentum slots and heads.
Metric: max |ours - reference| / max |reference| <= 1e-5 (float32).
"""
import os
import re
import sys

import ml_collections
import numpy as np
import pytest

from simclr_jax.models import build_backbone

tf = pytest.importorskip("tensorflow")


RTOL = 1e-5
BN_EPS = 1e-5
STAGES = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}


def rel_diff(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


class Variables:
    """Creates each variable when the forward pass first needs it, under its TF1 name and its
    TF2 object path; random values, BN statistics and affines included."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.counts = {"conv2d": 0, "batch_normalization": 0}
        self.tf1, self.tf2 = {}, {}

    def _tf1_name(self, kind):
        n = self.counts[kind]
        self.counts[kind] += 1
        return f"{kind}_{n}" if n else kind

    def conv(self, path, k, cin, cout):
        std = np.sqrt(2.0 / (k * k * cin))
        w = (std * self.rng.normal(size=(k, k, cin, cout))).astype(np.float32)
        self.tf1[f"{self._tf1_name('conv2d')}/kernel"] = w
        self.tf2[f"{path}/kernel"] = w
        return w

    def bn(self, path, c):
        name = self._tf1_name("batch_normalization")
        values = {"gamma": 0.6 + 0.8 * self.rng.random(c), "beta": 0.2 * self.rng.normal(size=c),
                  "moving_mean": 0.2 * self.rng.normal(size=c),
                  "moving_variance": 0.6 + 0.8 * self.rng.random(c)}
        for leaf, v in values.items():
            self.tf1[f"{name}/{leaf}"] = v.astype(np.float32)
            self.tf2[f"{path}/{leaf}"] = v.astype(np.float32)
        return {k: v.astype(np.float32) for k, v in values.items()}


def fixed_padding(x, k):
    total = k - 1
    beg = total // 2
    return tf.pad(x, [[0, 0], [beg, total - beg], [beg, total - beg], [0, 0]])


def conv2d_fixed_padding(v, path, x, filters, k, strides):
    """tf2/resnet.py Conv2dFixedPadding: explicit padding + VALID if strided, else SAME."""
    w = v.conv(f"{path}/conv2d", k, int(x.shape[-1]), filters)
    if strides > 1:
        x = fixed_padding(x, k)
    return tf.nn.conv2d(x, w, strides, "SAME" if strides == 1 else "VALID")


def conv2d(v, path, x, filters):
    """A plain 1x1 tf.keras.layers.Conv2D (SK's mixing convs)."""
    return tf.nn.conv2d(x, v.conv(path, 1, int(x.shape[-1]), filters), 1, "SAME")


def batch_norm_relu(v, path, x, relu=True):
    p = v.bn(f"{path}/bn", int(x.shape[-1]))
    x = (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + BN_EPS) * p["gamma"] + p["beta"]
    return tf.nn.relu(x) if relu else x


def sk_conv2d(v, path, x, filters, strides, sk_ratio, min_dim=32):
    x = conv2d_fixed_padding(v, f"{path}/conv2d_fixed_padding", x, 2 * filters, 3, strides)
    x = batch_norm_relu(v, f"{path}/batch_norm_relu", x)
    x = tf.stack(tf.split(x, 2, axis=3))
    g = tf.reduce_mean(tf.reduce_sum(x, axis=0), [1, 2], keepdims=True)
    g = conv2d(v, f"{path}/conv2d_0", g, max(int(filters * sk_ratio), min_dim))
    g = batch_norm_relu(v, f"{path}/batch_norm_relu_1", g)
    mixing = tf.stack(tf.split(conv2d(v, f"{path}/conv2d_1", g, 2 * filters), 2, axis=3))
    return tf.reduce_sum(x * tf.nn.softmax(mixing, axis=0), axis=0)


def resnet_d_pool(x, strides):
    if strides > 1:
        x = fixed_padding(x, 2)
    return tf.nn.avg_pool2d(x, 2, strides, "SAME" if strides == 1 else "VALID")


def residual_block(v, path, x, filters, strides, projection, sk_ratio):
    shortcut = x
    if projection:
        if sk_ratio > 0:
            i = 2 if strides > 1 else 1            # [FixedPadding,] AveragePooling2D, conv, BN
            shortcut = conv2d_fixed_padding(v, f"{path}/shortcut_layers/{i}",
                                            resnet_d_pool(x, strides), filters, 1, 1)
        else:
            i = 0
            shortcut = conv2d_fixed_padding(v, f"{path}/shortcut_layers/0", x, filters, 1,
                                            strides)
        shortcut = batch_norm_relu(v, f"{path}/shortcut_layers/{i + 1}", shortcut, relu=False)
    y = conv2d_fixed_padding(v, f"{path}/conv2d_bn_layers/0", x, filters, 3, strides)
    y = batch_norm_relu(v, f"{path}/conv2d_bn_layers/1", y)
    y = conv2d_fixed_padding(v, f"{path}/conv2d_bn_layers/2", y, filters, 3, 1)
    y = batch_norm_relu(v, f"{path}/conv2d_bn_layers/3", y, relu=False)
    return tf.nn.relu(y + shortcut)


def bottleneck_block(v, path, x, filters, strides, projection, sk_ratio):
    shortcut = x
    if projection:
        if sk_ratio > 0:
            i = 2 if strides > 1 else 1
            shortcut = conv2d_fixed_padding(v, f"{path}/projection_layers/{i}",
                                            resnet_d_pool(x, strides), 4 * filters, 1, 1)
        else:
            i = 0
            shortcut = conv2d_fixed_padding(v, f"{path}/projection_layers/0", x, 4 * filters, 1,
                                            strides)
        shortcut = batch_norm_relu(v, f"{path}/projection_layers/{i + 1}", shortcut, relu=False)
    layers = f"{path}/conv_relu_dropblock_layers"
    y = conv2d_fixed_padding(v, f"{layers}/0", x, filters, 1, 1)
    y = batch_norm_relu(v, f"{layers}/1", y)                  # 2: DropBlock
    if sk_ratio > 0:
        y = sk_conv2d(v, f"{layers}/3", y, filters, strides, sk_ratio)   # 4: DropBlock
        i = 5
    else:
        y = conv2d_fixed_padding(v, f"{layers}/3", y, filters, 3, strides)
        y = batch_norm_relu(v, f"{layers}/4", y)             # 5: DropBlock
        i = 6
    y = conv2d_fixed_padding(v, f"{layers}/{i}", y, 4 * filters, 1, 1)
    y = batch_norm_relu(v, f"{layers}/{i + 1}", y, relu=False)
    return tf.nn.relu(y + shortcut)


def simclr_resnet(v, x, depth, width, cifar_stem=False, sk_ratio=0.0):
    """Features [B, C] of google-research/simclr's ResNet (tf2/resnet.py Resnet.call)."""
    root = "model/resnet_model"
    stem = f"{root}/initial_conv_relu_max_pool"
    c = int(64 * width)
    x = tf.constant(x)
    if cifar_stem:
        x = conv2d_fixed_padding(v, f"{stem}/0", x, c, 3, 1)
        x = batch_norm_relu(v, f"{stem}/2", x)                  # 1, 3: IdentityLayer
    else:
        if sk_ratio > 0:
            x = conv2d_fixed_padding(v, f"{stem}/0", x, c // 2, 3, 2)
            x = batch_norm_relu(v, f"{stem}/1", x)
            x = conv2d_fixed_padding(v, f"{stem}/2", x, c // 2, 3, 1)
            x = batch_norm_relu(v, f"{stem}/3", x)
            x = conv2d_fixed_padding(v, f"{stem}/4", x, c, 3, 1)
            x = batch_norm_relu(v, f"{stem}/6", x)              # 5: IdentityLayer
        else:
            x = conv2d_fixed_padding(v, f"{stem}/0", x, c, 7, 2)
            x = batch_norm_relu(v, f"{stem}/2", x)
        x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    block = bottleneck_block if depth >= 50 else residual_block
    for g, (blocks, filters) in enumerate(zip(STAGES[depth], (64, 128, 256, 512))):
        for b in range(blocks):
            x = block(v, f"{root}/block_groups/{g}/layers/{b}", x, int(filters * width),
                      2 if g > 0 and b == 0 else 1, b == 0, sk_ratio)
    return tf.reduce_mean(x, [1, 2]).numpy()


def images(size, seed):
    return np.random.default_rng(seed).random(size=(2, size, size, 3)).astype(np.float32)


# ----------------------------------------------------------------------------- writing files

def write_tf1(prefix, encoders, extra=None):
    """A name-based checkpoint as TF1's Saver writes it (tensor names as given)."""
    names, tensors = [], []
    for scope, variables in encoders.items():
        for name, value in variables.tf1.items():
            names.append(f"{scope}{name}")
            tensors.append(tf.constant(value))
    for name, value in (extra or {}).items():
        names.append(name)
        tensors.append(tf.constant(value))
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)


def module_tree(flat):
    """(tf.Modules whose attribute paths are the keys of `flat`, {path: tf.Variable}): list
    positions become lists; a position without variables (a DropBlock) is an empty module."""
    created = {}
    tree = {}
    for path, value in flat.items():
        node = tree
        *parts, leaf = path.split("/")
        for part in parts:
            node = node.setdefault(part, {})
        node[leaf] = value

    def build(node, path):
        if isinstance(node, np.ndarray):
            created[path] = tf.Variable(node)
            return created[path]
        if all(k.isdigit() for k in node):
            return [build(node[str(i)], f"{path}/{i}") if str(i) in node else tf.Module()
                    for i in range(max(map(int, node)) + 1)]
        m = tf.Module()
        for k, child in node.items():
            setattr(m, k, build(child, f"{path}/{k}" if path else k))
        return m

    return build(tree, ""), created


def heads(seed):
    rng = np.random.default_rng(seed)
    return {"model/_projection_head/linear_layers/0/dense/kernel":
            rng.normal(size=(8, 8)).astype(np.float32),
            "model/supervised_head/linear_layer/dense/kernel":
            rng.normal(size=(8, 10)).astype(np.float32)}


# ----------------------------------------------------------------------------- tests

def test_tf1_checkpoint_sk_resnet50_and_its_ema_copy(tmp_path):
    """SimCLR v2's released TF1 layout: `base_model/` and `ema_model/base_model/` (two different
    networks here), Momentum slots, the heads and global_step beside them. The default reads
    `base_model/` (what the official code builds and exports); `encoder="ema_model/"` the EMA."""
    import simclr_jax
    from simclr_jax.weights import released
    x = images(64, seed=1)
    online, ema = Variables(seed=2), Variables(seed=3)
    theirs = simclr_resnet(online, x, 50, 0.125, sk_ratio=0.0625)
    theirs_ema = simclr_resnet(ema, x, 50, 0.125, sk_ratio=0.0625)
    extra = {"base_model/conv2d/kernel/Momentum": online.tf1["conv2d/kernel"],
             "head_contrastive/nl_0/dense/kernel": np.ones((8, 8), np.float32),
             "global_step": np.int64(250228)}
    write_tf1(tmp_path / "model.ckpt-250228",
              {"base_model/": online, "ema_model/base_model/": ema}, extra)
    w = released.import_file(str(tmp_path / "model.ckpt-250228"))
    assert (w.model_config["depth"], w.model_config["sk_ratio"], w.model_config["width"],
            w.model_config["stem"]) == (50, 0.0625, 0.125, "imagenet")
    assert (w.format, w.normalize, w.image_size) == ("tf_resnet", "none", 224)
    assert "base_model/" in w.source and "ema" not in w.source
    for path, encoder, expected in ((tmp_path / "model.ckpt-250228", None, theirs),
                                    (tmp_path / "model.ckpt-250228.index", "ema_model/",
                                     theirs_ema)):
        enc = simclr_jax.load_encoder(str(path), encoder=encoder)
        assert rel_diff(enc.apply(x), expected) <= RTOL, (path, encoder)
    assert rel_diff(theirs, theirs_ema) > 1e-2        # the two encoders are told apart


@pytest.mark.parametrize("depth, cifar", [(18, True), (50, False)])
def test_tf2_training_checkpoint_object_paths(tmp_path, depth, cifar):
    """tf2/run.py's tf.train.Checkpoint(model=..., global_step=..., optimizer=...) through its
    CheckpointManager: the directory is given (its `checkpoint` file names the latest)."""
    from simclr_jax.weights import released
    size = 32 if cifar else 64
    x = images(size, seed=4)
    v = Variables(seed=5)
    theirs = simclr_resnet(v, x, depth, 0.25 if cifar else 0.125, cifar_stem=cifar)
    model, _ = module_tree({k[len("model/"):]: a for k, a in {**v.tf2, **heads(6)}.items()})
    optimizer = tf.Module()
    optimizer.iterations = tf.Variable(np.int64(100))
    ckpt = tf.train.Checkpoint(model=model, global_step=tf.Variable(np.int64(100)),
                               optimizer=optimizer)
    tf.train.CheckpointManager(ckpt, str(tmp_path / "model_dir"), max_to_keep=5).save(100)
    w = released.import_file(str(tmp_path / "model_dir"))
    assert w.model_config["depth"] == depth and w.model_config["sk_ratio"] == 0.0
    assert w.model_config["stem"] == ("cifar" if cifar else "imagenet")
    assert w.image_size == (32 if cifar else 224) and "TF2" in w.source
    module = build_backbone(ml_collections.ConfigDict(w.model_config))
    ours = module.apply({"params": w.params, "batch_stats": w.batch_stats}, x, train=False)
    assert rel_diff(ours, theirs) <= RTOL


def saved_model(path, variables, seed):
    """tf2/run.py build_saved_model: a module with `.model` and `.trainable_variables_list`
    (the trainable variables again: stored once, under whichever path is shortest)."""
    model, created = module_tree({k[len("model/"):]: a
                                  for k, a in {**variables.tf2, **heads(seed)}.items()})
    root = tf.Module()
    root.model = model
    root.trainable_variables_list = [var for path, var in created.items()
                                     if "moving_" not in path]
    tf.saved_model.save(root, str(path))


def test_tf2_saved_model_sk_resnet50_knn_eval_cli_and_bad_files(tmp_path, capsys):
    """The released form (gs://simclr-checkpoints-tf2/.../saved_model/): a SavedModel directory
    evaluated by `knn_eval --config.init_from=DIR` in a real process; a truncated checkpoint
    index is one `error:` line with exit status 2."""
    import json
    import subprocess

    from conftest import TEST_XLA_FLAGS
    from test_weights import export_cli
    from tiny_configs import ROOT

    import simclr_jax
    x = images(64, seed=7)
    v = Variables(seed=8)
    theirs = simclr_resnet(v, x, 50, 0.125, sk_ratio=0.0625)
    saved_model(tmp_path / "saved_model", v, seed=9)
    stored = tf.train.load_checkpoint(str(tmp_path / "saved_model" / "variables" / "variables"))
    assert any(k.startswith("trainable_variables_list/") for k in
               stored.get_variable_to_shape_map()), "the layout under test: aliased variables"
    enc = simclr_jax.load_encoder(str(tmp_path / "saved_model"))
    assert enc.model_config["sk_ratio"] == 0.0625 and enc.normalize == "none"
    assert rel_diff(enc.apply(x), theirs) <= RTOL

    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-m", "simclr_jax.main", "--config", "configs/knn_eval.py",
         f"--config.init_from={tmp_path / 'saved_model'}", "--workdir", str(tmp_path / "knn"),
         "--config.dataset.name=digits", "--config.dataset.image_size=32",
         "--config.dataset.knn_train_split=train[:5]", "--config.dataset.knn_test_split=test[:2]",
         "--config.eval.batch_size=16", "--config.eval.knn_k=5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "knn" / "knn_eval.json").read_text())
    assert result["num_bank_examples"] == 50 and result["knn_top1"] > 0.2, result

    index = tmp_path / "saved_model" / "variables" / "variables.index"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.ckpt-1.index").write_bytes(index.read_bytes()[:100])
    (tmp_path / "bad" / "model.ckpt-1.data-00000-of-00001").write_bytes(b"")
    rc, _, err = export_cli(capsys, "--workdir", str(tmp_path / "bad" / "model.ckpt-1"),
                            "--format", "torchvision", "--out", str(tmp_path / "x.pth"))
    assert rc == 2 and len(err) == 1 and "cannot be read as a TensorFlow checkpoint" in err[0], err
    rc, _, err = export_cli(capsys, "--workdir", str(tmp_path / "saved_model"), "--encoder",
                            "ema_model/", "--format", "torchvision", "--out", str(tmp_path / "y.pth"))
    assert rc == 2 and len(err) == 1 and "holds one encoder" in err[0], err


def test_a_tf_checkpoint_of_another_network_is_one_line(tmp_path):
    from simclr_jax.errors import UserError
    from simclr_jax.weights import released
    v = Variables(seed=10)
    simclr_resnet(v, images(32, seed=11), 18, 0.25)
    del v.tf1["conv2d_5/kernel"]                 # a network that is no SimCLR ResNet
    v.tf1 = {re.sub(r"conv2d_(\d+)", lambda m: f"conv2d_{int(m.group(1)) - 1}"
                    if int(m.group(1)) > 5 else m.group(0), k): a for k, a in v.tf1.items()}
    write_tf1(tmp_path / "model.ckpt-1", {"base_model/": v})
    with pytest.raises(UserError, match=r"model.ckpt-1: the checkpoint's ResNet \(20 convs"):
        released.import_file(str(tmp_path / "model.ckpt-1"))
    write_tf1(tmp_path / "other.ckpt-1", {}, {"encoder/layer1/w": np.ones(3, np.float32)})
    with pytest.raises(UserError, match="no SimCLR ResNet in this TF checkpoint"):
        released.import_file(str(tmp_path / "other.ckpt-1"))
