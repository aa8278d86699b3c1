"""SimCLR v1/v2's TensorFlow checkpoints (google-research/simclr) -> our ResNet.

Three layouts, all read with `tf.train.load_checkpoint` (TensorFlow is already a dependency of
the tf.data input; it is imported only here, only then):

| layout                                     | written by (google-research/simclr)                |
|--------------------------------------------|----------------------------------------------------|
| TF2 training checkpoint `ckpt-N` (object   | tf2/run.py: tf.train.Checkpoint(model=model,       |
| paths `model/resnet_model/...`)            | global_step=..., optimizer=...) + CheckpointManager |
| TF2 SavedModel `saved_model/<step>/`       | tf2/run.py build_saved_model / save: a tf.Module   |
| (`variables/variables`)                    | with `.model` = the Keras model (the released      |
|                                            | gs://simclr-checkpoints-tf2 models)                |
| TF1 checkpoint `model.ckpt-N` (names       | model.py (`tf.variable_scope('base_model')`),      |
| `base_model/conv2d_7/kernel`, ...; the     | resnet.py (tf.layers, auto-numbered in creation    |
| EMA copy under `ema_model/base_model/`)    | order); the released SimCLR v1/v2 checkpoints      |

TF2 object paths come from tf2/resnet.py's attributes: `initial_conv_relu_max_pool/<i>`,
`block_groups/<g>/layers/<b>/{shortcut_layers|projection_layers|conv2d_bn_layers|
conv_relu_dropblock_layers}/<i>`, a `Conv2dFixedPadding`'s `conv2d/kernel`, a `BatchNormRelu`'s
`bn/{gamma,beta,moving_mean,moving_variance}`, an `SK_Conv2D`'s `conv2d_fixed_padding`,
`batch_norm_relu`, `conv2d_0`, `batch_norm_relu_1`, `conv2d_1`. They are read through the
checkpoint's object graph, so a variable stored under another path (a SavedModel stores the
trainable ones under `trainable_variables_list/<n>`) is still found by its model path.

Both versions build the layers in the same order (stem, then per block: projection conv + BN,
conv1 + BN, the 3x3 conv or the SK conv's three convs and two BNs, conv3 + BN), which is also the
order our ResNet creates its modules in (`_our_layers`): the i-th conv kernel and the i-th BN of the file are our
i-th conv and BN. The architecture (depth, width, stem, SK) is the one of ours whose shapes equal
the file's (every conv and BN, in order). The function: TF's fixed padding is our k // 2 padding, the stem max pool is TF SAME
(`stem_pool_padding="same"`), every stage's first block has a projection
(`shortcut="first_block_of_stage"`), BN epsilon 1e-5, and the input is RGB in [0, 1] without
normalisation (data_util.py: convert_image_dtype only).
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.models import build_backbone, resnet
from simclr_jax.weights.torchvision import _get, _set as _put   # nested-dict path helpers
from simclr_jax.workdir import as_path

TF2_ROOT = "model/resnet_model/"
TF1_ENCODERS = ("base_model/", "ema_model/base_model/")   # the model, its EMA copy (v2 releases)
BN_NAMES = {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
SK_RATIO = 0.0625          # SimCLR v2's --sk_ratio for its SK models
IMAGE_SIZE = {"imagenet": 224, "cifar": 32}


def _tf():
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError("reading a TensorFlow checkpoint needs TensorFlow (pip install "
                        "tensorflow)") from None
    return tf


def checkpoint_prefix(path: str) -> Optional[str]:
    """The checkpoint prefix `tf.train.load_checkpoint` reads if `path` is a TF checkpoint (its
    prefix, .index or .data file, a directory with a `checkpoint` file) or a SavedModel
    directory; else None."""
    p = as_path(path)
    if p.is_dir():
        if (p / "saved_model.pb").exists():
            return str(p / "variables" / "variables")
        if (p / "checkpoint").exists() and not (p / "config.json").exists():
            latest = _tf().train.latest_checkpoint(str(p))
            if latest is None:
                raise UserError(f"{path}: its `checkpoint` file names no checkpoint that exists")
            return latest
        return None
    s = str(path)
    m = re.match(r"(.*)\.(index|data-\d+-of-\d+)$", s)
    if m and p.exists():
        return m.group(1)
    if not p.exists() and as_path(s + ".index").exists():
        return s
    return None


# ----------------------------------------------------------------------------- reading

def _object_paths(graph) -> Dict[str, str]:
    """{object path of a variable under TF2_ROOT: checkpoint key}, every path, not only the one
    the variable was saved under."""
    out: Dict[str, str] = {}

    def walk(node_id: int, path: str, seen: frozenset, depth: int):
        node = graph.nodes[node_id]
        for attr in node.attributes:
            if attr.name == "VARIABLE_VALUE" and path.startswith(TF2_ROOT):
                out[path] = attr.checkpoint_key
        if depth > 24:
            return
        for child in node.children:
            if child.node_id not in seen:
                walk(child.node_id, f"{path}/{child.local_name}" if path else child.local_name,
                     seen | {child.node_id}, depth + 1)

    root = graph.nodes[0]
    for child in root.children:        # only the model's subtree: `model/resnet_model/...`
        if child.local_name == "model":
            for grand in graph.nodes[child.node_id].children:
                if grand.local_name == "resnet_model":
                    walk(grand.node_id, TF2_ROOT.rstrip("/"), frozenset({0, child.node_id}), 2)
    return out


# A TF2 path's position in creation order: stem (0) or block group (1, g), block b, the
# shortcut list before the main one, item i, the SK conv's parts in their order.
_TF2 = re.compile(
    r"^model/resnet_model/(?:initial_conv_relu_max_pool/(?P<stem>\d+)|block_groups/(?P<g>\d+)/"
    r"layers/(?P<b>\d+)/(?P<list>shortcut_layers|projection_layers|conv2d_bn_layers|"
    r"conv_relu_dropblock_layers)/(?P<i>\d+))/(?P<rest>.+)$")
_SK_PARTS = ("conv2d_fixed_padding/", "batch_norm_relu/", "conv2d_0/", "batch_norm_relu_1/",
             "conv2d_1/")


def _tf2_order(path: str):
    m = _TF2.match(path)
    if m is None:
        return None
    rest = m.group("rest")
    part = next((k for k, p in enumerate(_SK_PARTS) if rest.startswith(p)), -1)
    if m.group("stem") is not None:
        return (0, 0, 0, 0, int(m.group("stem")), part)
    main = m.group("list") in ("conv2d_bn_layers", "conv_relu_dropblock_layers")
    return (1, int(m.group("g")), int(m.group("b")), int(main), int(m.group("i")), part)


def _layers_from_tf2(reader, names) -> Tuple[List[np.ndarray], List[dict]]:
    from tensorflow.core.protobuf import trackable_object_graph_pb2
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH))
    paths = _object_paths(graph)
    if not paths:
        raise UserError(f"a TF2 checkpoint without a `model/resnet_model` (the ResNet of "
                        f"google-research/simclr tf2/model.py); it holds {len(names)} variables, "
                        f"e.g. {', '.join(sorted(names)[:3])}")
    convs, bns = {}, {}
    for path, key in paths.items():
        order = _tf2_order(path)
        if order is None:
            continue
        leaf = path.rsplit("/", 1)[1]
        if re.search(r"(^|/)(se_reduce|se_expand)/", path):
            raise UserError("the checkpoint's ResNet has Squeeze-and-Excitation layers "
                            "(--se_ratio > 0), which our ResNet does not have")
        if leaf == "kernel":
            convs[order] = reader.get_tensor(key)
        elif leaf in BN_NAMES:
            bns.setdefault(order, {})[BN_NAMES[leaf]] = reader.get_tensor(key)
    return [convs[k] for k in sorted(convs)], [bns[k] for k in sorted(bns)]


def _tf1_index(name: str, layer: str, prefix: str) -> Optional[int]:
    m = re.match(re.escape(prefix) + layer + r"(?:_(\d+))?/", name)
    return None if m is None else int(m.group(1) or 0)


def _layers_from_tf1(reader, names, prefix) -> Tuple[List[np.ndarray], List[dict]]:
    convs, bns = {}, {}
    for name in names:
        if not name.startswith(prefix) or name.count("/") != prefix.count("/") + 1:
            continue            # other scopes, optimizer slots (.../kernel/Momentum)
        leaf = name.rsplit("/", 1)[1]
        i = _tf1_index(name, "conv2d", prefix)
        if i is not None and leaf == "kernel":
            convs[i] = reader.get_tensor(name)
        i = _tf1_index(name, "batch_normalization", prefix)
        if i is not None and leaf in BN_NAMES:
            bns.setdefault(i, {})[BN_NAMES[leaf]] = reader.get_tensor(name)
    if sorted(convs) != list(range(len(convs))) or sorted(bns) != list(range(len(bns))):
        raise UserError(f"the TF1 checkpoint's {prefix}conv2d_N / batch_normalization_N are not "
                        f"numbered 0..n-1 (found {len(convs)} convs, {len(bns)} BNs)")
    if any(re.match(re.escape(prefix) + r"conv2d(_\d+)?/bias$", n) for n in names):
        raise UserError("the checkpoint's ResNet has convs with a bias (Squeeze-and-Excitation, "
                        "--se_ratio > 0), which our ResNet does not have")
    return [convs[k] for k in sorted(convs)], [bns[k] for k in sorted(bns)]


def read_layers(prefix: str, encoder: Optional[str] = None):
    """(conv kernels [kh, kw, in, out] in creation order, BNs {scale, bias, mean, var} in
    creation order, which encoder was read)."""
    tf = _tf()
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:   # a truncated or foreign .index / .data file
        raise UserError(f"cannot be read as a TensorFlow checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from None
    names = reader.get_variable_to_shape_map()
    if OBJECT_GRAPH in names:
        if encoder not in (None, "", "model", TF2_ROOT):
            raise UserError(f"--encoder {encoder!r}: a TF2 checkpoint holds one encoder, "
                            f"{TF2_ROOT!r}")
        convs, bns = _layers_from_tf2(reader, names)
        return convs, bns, f"TF2 object graph {TF2_ROOT}"
    choices = [p for p in TF1_ENCODERS if f"{p}conv2d/kernel" in names]
    if not choices:
        raise UserError(f"no SimCLR ResNet in this TF checkpoint: neither an object graph "
                        f"(TF2) nor {TF1_ENCODERS[0]}conv2d/kernel (TF1); it holds "
                        f"{len(names)} variables, e.g. {', '.join(sorted(names)[:3])}")
    if encoder:
        want = encoder if encoder.endswith("/") else encoder + "/"
        want = {"ema_model/": "ema_model/base_model/"}.get(want, want)
        if want not in choices:
            raise UserError(f"--encoder {encoder!r}: this TF1 checkpoint holds "
                            f"{', '.join(repr(c) for c in choices)}")
        choices = [want]
    convs, bns = _layers_from_tf1(reader, names, choices[0])
    return convs, bns, f"TF1 {choices[0]}"


# ----------------------------------------------------------------------------- our side

def _our_layers(cfg: dict) -> Tuple[List[tuple], List[tuple]]:
    """(conv module paths, BN module paths) of our ResNet (models/resnet.py) in the order it
    creates them, for the configs `candidate_configs` makes (a projection on every stage's first
    block)."""
    convs, bns = [], []
    sk = float(cfg["sk_ratio"]) > 0
    stem = ([("stem_conv0",), ("stem_conv1",)] if sk and cfg["stem"] == "imagenet" else [])
    for i, path in enumerate(stem):
        convs.append(path)
        bns.append((f"stem_bn{i}",))
    convs.append(("stem_conv",))
    bns.append(("stem_bn",))
    bottleneck = resnet.is_bottleneck(int(cfg["depth"]))
    for stage, blocks in enumerate(resnet.STAGE_SIZES[int(cfg["depth"])]):
        for b in range(blocks):
            name = f"stage{stage + 1}_block{b + 1}"
            if b == 0:
                convs.append((name, "shortcut", "conv"))
                bns.append((name, "shortcut", "bn"))
            convs.append((name, "conv1"))
            bns.append((name, "bn1"))
            if bottleneck and sk:
                convs += [(name, "sk", "conv"), (name, "sk", "squeeze_conv"),
                          (name, "sk", "mix_conv")]
                bns += [(name, "sk", "bn"), (name, "sk", "squeeze_bn")]
            else:
                convs.append((name, "conv2"))
                bns.append((name, "bn2"))
            if bottleneck:
                convs.append((name, "conv3"))
                bns.append((name, "bn3"))
    return convs, bns


def _count_convs(depth: int, stem: str, sk: bool) -> int:
    blocks = sum(resnet.STAGE_SIZES[depth])
    per_block = (5 if sk else 3) if resnet.is_bottleneck(depth) else 2
    return (3 if sk and stem == "imagenet" else 1) + blocks * per_block + 4


def candidate_configs(convs: List[np.ndarray]) -> List[dict]:
    """Our model configs with the file's number of convs and its stem width."""
    out = []
    stem_out = int(np.shape(convs[0])[-1])
    for depth in resnet.STAGE_SIZES:
        for stem, sk in (("imagenet", False), ("imagenet", True), ("cifar", False)):
            if _count_convs(depth, stem, sk) != len(convs):
                continue
            width = (2 * stem_out if sk else stem_out) / 64.0
            out.append({"name": "resnet", "depth": depth, "width": width, "stem": stem,
                        "sk_ratio": SK_RATIO if sk else 0.0, "shortcut": "first_block_of_stage",
                        "stem_pool_padding": "same", "conv_padding": "torch",
                        "conv_init": "fan_in_truncated_normal", "zero_init_residual": True,
                        "bn_group_size": None, "dtype": "float32"})
    return out


def _shapes(model_cfg: dict) -> dict:
    module = build_backbone(ml_collections.ConfigDict(model_cfg))
    return jax.eval_shape(lambda: module.init(jax.random.key(0, impl="rbg"),
                                              jnp.zeros((1, 32, 32, 3)), train=False))


def to_ours(convs: List[np.ndarray], bns: List[dict]) -> Tuple[dict, dict]:
    """(model config, {"params", "batch_stats"}) of the ResNet of ours whose conv and BN shapes
    are the file's; one UserError naming what was found otherwise."""
    if not convs:
        raise UserError("the checkpoint holds no conv kernels of a ResNet")
    shapes = [tuple(np.shape(k)) for k in convs]
    for cfg in candidate_configs(convs):
        template = _shapes(cfg)
        conv_paths, bn_paths = _our_layers(cfg)
        ours = [tuple(_get(template["params"], p)["kernel"].shape) for p in conv_paths]
        if ours != shapes or len(bn_paths) != len(bns):
            continue
        if any(tuple(np.shape(b.get("scale", ()))) != tuple(_get(template["params"], p)["scale"].shape)
               for p, b in zip(bn_paths, bns)):
            continue
        params, stats = {}, {}
        for path, kernel in zip(conv_paths, convs):
            _put(params, path, {"kernel": np.asarray(kernel, np.float32)})
        for path, bn in zip(bn_paths, bns):
            missing = [k for k in ("scale", "bias", "mean", "var") if k not in bn]
            if missing:
                raise UserError(f"a BN of the checkpoint lacks {missing} (SimCLR's BNs have "
                                f"gamma, beta, moving_mean and moving_variance)")
            _put(params, path, {k: np.asarray(bn[k], np.float32) for k in ("scale", "bias")})
            _put(stats, path, {k: np.asarray(bn[k], np.float32) for k in ("mean", "var")})
        return cfg, {"params": params, "batch_stats": stats}
    raise UserError(f"the checkpoint's ResNet ({len(convs)} convs, {len(bns)} BNs, stem conv "
                    f"{shapes[0]}, last conv {shapes[-1]}) is none of ours: expected SimCLR's "
                    f"ResNet-{{18,34,50,101,152,200}} (SK or not, ImageNet or CIFAR stem)")


def import_checkpoint(prefix: str, encoder: Optional[str] = None):
    """(model config, variables, image size, normalisation, which encoder was read)."""
    convs, bns, source = read_layers(prefix, encoder)
    cfg, variables = to_ours(convs, bns)
    return cfg, variables, IMAGE_SIZE[cfg["stem"]], "none", source
