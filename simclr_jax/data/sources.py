"""Image sources: the embedded "digits", a folder of JPEG/PNG files ("folder:/path"), or TFDS.

A `Source` is a split's examples plus how to read them. Most sources are RANDOM ACCESS: the
records (decoded uint8 images, encoded bytes or file paths) and labels sit in numpy arrays, so
the pipeline can shuffle each epoch with a stateless permutation and resume at any step in O(1).
Small datasets (digits, CIFAR-size folders or TFDS datasets, up to MAX_DECODED_BYTES) are decoded
once and held in memory. Large TFDS datasets (ImageNet) are STREAMED from their record files.

Folders are checked once when the source is made: every file is decoded by the same TF decoder
the pipeline uses (parallel tf.data, ~5 s for 50k CIFAR JPEGs on 2 cores); unreadable files are
skipped with one warning listing them. For folders too big to hold in memory the result is
cached in ~/.cache/simclr_jax/folder_scan (or $SIMCLR_JAX_CACHE_DIR), keyed by the file list,
sizes and modification times.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from typing import Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf
from etils import epath

from simclr_jax.data import augment_tf, embedded
from simclr_jax.errors import UserError
from simclr_jax.workdir import as_path

MAX_DECODED_BYTES = 1 << 30      # hold decoded uint8 pixels in memory up to 1 GiB
MAX_ENCODED_BYTES = 2 << 30      # hold a TFDS split's encoded records in memory up to 2 GiB
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAX_LISTED_BAD_FILES = 50
_SCAN_CACHE_ENV = "SIMCLR_JAX_CACHE_DIR"


def keep_tf_off_accelerators() -> None:
    """tf.data only needs the host: never let TensorFlow reserve GPU memory JAX needs."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already initialised its devices; nothing more we can do
        pass


keep_tf_off_accelerators()


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """One split of a dataset.

    storage: "array"   images = uint8 [N, H, W, 3] decoded pixels in memory
             "encoded" images = object [N] of encoded JPEG/PNG bytes in memory
             "file"    images = object [N] of file paths (bytes), read on demand
             "stream"  records are streamed by `stream` (large TFDS datasets); images is None
    """
    name: str
    split: str
    num_examples: int
    num_classes: Optional[int]
    image_shape: tuple            # (H, W, 3); H, W are None when sizes vary
    storage: str
    images: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None      # int32 [N], -1 = unlabelled
    # stream(process_index, process_count, shuffle_seed|None) -> tf.data of
    # {"image": encoded bytes, "label": int32}; stream_sizes(process_count) -> examples per process
    stream: Optional[Callable[..., tf.data.Dataset]] = None
    stream_sizes: Optional[Callable[[int], list]] = None

    @property
    def random_access(self) -> bool:
        return self.storage != "stream"

    def read(self, record):
        """A record (as the pipeline sees it) -> uint8 [H, W, 3]."""
        if self.storage == "array":
            return record
        if self.storage == "file":
            record = tf.io.read_file(record)
        return augment_tf.decode(record)


# ----------------------------------------------------------------------------- entry point

def get_source(spec: str, split: str, data_dir: Optional[str] = None, *,
               in_memory: Optional[bool] = None) -> Source:
    """"digits" | "folder:/path" | a TFDS name -> Source for `split`.

    in_memory: None = decide by size; True = hold records in memory; False = never hold pixels
    (folders: read files on demand; TFDS: stream).
    """
    if not spec:
        raise UserError("empty dataset name: use 'digits', 'folder:/path/to/images' or a TFDS "
                         "name such as 'cifar10'.")
    if spec == "digits":
        return _digits_source(split)
    if spec.startswith("folder:"):
        return _folder_source(spec[len("folder:"):], split, in_memory)
    return _tfds_source(spec, split, data_dir, in_memory)


# ----------------------------------------------------------------------------- split slices

_SLICE_RE = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


def parse_split(split: str) -> tuple[str, Optional[str], Optional[str]]:
    """"train[:90%]" -> ("train", None, "90%")."""
    m = _SLICE_RE.match(split.replace(" ", ""))
    if not m:
        raise UserError(f"cannot parse split {split!r}; use e.g. 'train', 'train[:4500]', "
                         f"'train[4500:]', 'train[:90%]' or 'train[-10%:]'.")
    return m.group(1), m.group(2), m.group(3)


def _bound(spec: Optional[str], n: int) -> Optional[int]:
    if spec is None:
        return None
    if spec.endswith("%"):
        return int(round(n * int(spec[:-1]) / 100))
    return int(spec)


def slice_per_class(labels: np.ndarray, start: Optional[str], stop: Optional[str]) -> np.ndarray:
    """Indices selecting [start:stop] WITHIN each class (in the classes' own order), so a
    hold-out such as 'train[4500:]' stays class-balanced. Returned in increasing order."""
    if start is None and stop is None:
        return np.arange(len(labels))
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        keep.append(members[_bound(start, n):_bound(stop, n)])
    return np.sort(np.concatenate(keep)) if keep else np.zeros([0], np.int64)


# ----------------------------------------------------------------------------- digits

def _digits_source(split: str) -> Source:
    base, start, stop = parse_split(split)
    images, labels = embedded.digits_arrays()
    idx = embedded.digits_split_indices(base, labels)
    idx = idx[slice_per_class(labels[idx], start, stop)]
    if len(idx) == 0:
        raise UserError(f"digits split {split!r} is empty.")
    return Source(name="digits", split=split, num_examples=len(idx),
                  num_classes=embedded.NUM_CLASSES, image_shape=images.shape[1:],
                  storage="array", images=images[idx], labels=labels[idx])


# ----------------------------------------------------------------------------- folders

def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_folder(root: str) -> tuple[list, list, list]:
    """(paths, labels, class_names). Class sub-folders (searched recursively) -> labels in
    sorted name order; no sub-folder with images -> a flat unlabelled folder (labels -1).
    Through etils.epath, so root may be a local path or a URI (gs://...)."""
    top = epath.Path(root)
    entries = sorted(e.name for e in top.iterdir() if not e.name.startswith("."))
    subdirs = [e for e in entries if (top / e).is_dir()]
    loose = [e for e in entries if _is_image(e) and not (top / e).is_dir()]
    classes, paths, labels, empty = [], [], [], []
    for d in subdirs:
        found = []
        for dirpath, dirnames, filenames in (top / d).walk():
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            found += [str(dirpath / f) for f in sorted(filenames) if _is_image(f)]
        if not found:
            empty.append(d)
            continue
        paths += found
        labels += [len(classes)] * len(found)
        classes.append(d)
    if classes:
        if empty:
            logging.warning("folder %s: sub-folders without images are not classes: %s",
                            root, ", ".join(empty))
        if loose:
            logging.warning("folder %s: %d images at the top level are ignored because the "
                            "folder has class sub-folders.", root, len(loose))
        return paths, labels, classes
    return [str(top / f) for f in loose], [-1] * len(loose), []


def _fingerprint(paths: list) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = epath.Path(p).stat()
        h.update(f"{p}\0{st.length}\0{st.mtime}\n".encode())
    return h.hexdigest()


def _scan_cache_path(fingerprint: str) -> str:
    base = os.environ.get(_SCAN_CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "simclr_jax")
    return os.path.join(base, "folder_scan", fingerprint + ".json")


def _scan(paths: list, keep_shape: Optional[tuple]):
    """Decode every file once (parallel tf.data; the same decoder the pipeline uses).

    Returns (good indices [n] int64, shapes [n, 3], pixels uint8 [n, H, W, 3] or None). Pixels
    are kept only when keep_shape=(H, W) is given; any image of another shape is reported by
    `shapes` and the caller drops the pixels.
    """
    def load(i, path):
        image = augment_tf.decode(tf.io.read_file(path))
        out = {"i": i, "shape": tf.shape(image)}
        if keep_shape is not None:
            out["pixels"] = tf.image.resize_with_crop_or_pad(image, *keep_shape)
        return out

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64),
                                             np.asarray(paths, dtype=object)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(1024)
    parts = list(ds.as_numpy_iterator())
    if not parts:
        return np.zeros([0], np.int64), np.zeros([0, 3], np.int32), None
    good = np.concatenate([p["i"] for p in parts])
    shapes = np.concatenate([p["shape"] for p in parts])
    pixels = np.concatenate([p["pixels"] for p in parts]) if keep_shape is not None else None
    return good, shapes, pixels


@functools.lru_cache(maxsize=1)
def _load_folder(root: str, fingerprint: str, in_memory: Optional[bool]):
    """Scan once per (folder, file listing): the train split and the kNN bank/test slices of
    the same folder share one scan. Returns (paths, labels, classes, storage, images, shape)."""
    paths, labels, classes = _list_folder(root)
    if not paths:
        raise UserError(f"folder dataset {root!r} has no images: expected .jpg/.jpeg/.png files "
                         f"in class sub-folders ({root}/<class>/xxx.jpg) or directly in it.")
    keep_shape = None
    if in_memory is not False:
        # Peek at a few images: a folder of equal, small images is decoded into memory.
        _, probe, _ = _scan(paths[:16], None)
        hw = {tuple(s[:2]) for s in probe}
        if len(hw) == 1 and len(paths) * math.prod(next(iter(hw))) * 3 <= MAX_DECODED_BYTES:
            keep_shape = next(iter(hw))

    cache_file = None if keep_shape else _scan_cache_path(fingerprint)
    cached = None
    if cache_file and os.path.exists(cache_file):
        with open(cache_file) as f:
            cached = json.load(f)
    if cached is not None:
        bad = set(cached["bad"])
        good = np.array([i for i, p in enumerate(paths) if p not in bad], np.int64)
        shapes, pixels = np.array(cached["shapes"], np.int32), None
    else:
        if cache_file:
            logging.info("Checking %d images in %s once (result cached in %s).", len(paths),
                         root, cache_file)
        good, shapes, pixels = _scan(paths, keep_shape)
    bad = sorted(set(range(len(paths))) - set(good.tolist()))
    if bad:
        listed = [paths[i] for i in bad[:_MAX_LISTED_BAD_FILES]]
        more = f" ... and {len(bad) - len(listed)} more" if len(bad) > len(listed) else ""
        logging.warning("folder %s: skipping %d unreadable or corrupt image file(s): %s%s",
                        root, len(bad), ", ".join(listed), more)
    if cache_file and cached is None:
        _write_scan_cache(cache_file, [paths[i] for i in bad], shapes)
    if len(good) == 0:
        raise UserError(f"folder dataset {root!r}: none of its {len(paths)} image files could "
                         f"be decoded.")

    uniform = len({tuple(s) for s in shapes.tolist()}) == 1
    shape = tuple(int(v) for v in shapes[0]) if uniform else (None, None, 3)
    paths = np.array([os.fsencode(paths[i]) for i in good], dtype=object)
    labels = np.asarray(labels, np.int32)[good]
    if pixels is not None and uniform:
        return paths, labels, classes, "array", pixels, shape
    if in_memory:
        encoded = np.array([_read_bytes(p) for p in paths], dtype=object)
        return paths, labels, classes, "encoded", encoded, shape
    return paths, labels, classes, "file", paths, shape


def _read_bytes(path) -> bytes:
    return epath.Path(os.fsdecode(path)).read_bytes()


def _write_scan_cache(cache_file: str, bad: list, shapes: np.ndarray) -> None:
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        tmp = cache_file + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"bad": bad, "shapes": shapes.tolist()}, f)
        os.replace(tmp, cache_file)
    except OSError as e:  # a read-only home is no reason to fail
        logging.info("Could not write the folder scan cache %s: %s", cache_file, e)


def _folder_source(root: str, split: str, in_memory: Optional[bool]) -> Source:
    root = str(as_path(root))
    if not epath.Path(root).is_dir():
        raise UserError(f"folder dataset {root!r} does not exist or is not a directory; use "
                         f"--config.dataset.name=folder:/path/to/images.")
    base, start, stop = parse_split(split)
    if base not in ("train", "all"):
        raise UserError(f"a folder dataset has one split, 'train' (or 'all'), optionally "
                         f"sliced per class like 'train[:90%]' or 'train[4500:]'; got {split!r}.")
    listing, _, _ = _list_folder(root)
    fingerprint = _fingerprint(listing)
    _, labels, classes, storage, images, shape = _load_folder(root, fingerprint, in_memory)
    idx = slice_per_class(labels, start, stop)
    if len(idx) == 0:
        raise UserError(f"split {split!r} of folder {root!r} selects no images.")
    if len(idx) < len(labels):  # the whole folder shares the scan's arrays, a slice copies
        images, labels = images[idx], labels[idx]
    return Source(name=f"folder:{root}", split=split, num_examples=len(idx),
                  num_classes=len(classes) or None, image_shape=shape, storage=storage,
                  images=images, labels=labels)


# ----------------------------------------------------------------------------- TFDS

def _tfds_builder(name: str, data_dir: Optional[str]):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UserError(
            f"unknown dataset {name!r}: use 'digits', 'folder:/path/to/images', or a TFDS "
            f"dataset name (e.g. 'cifar10', 'imagenet2012'). TFDS: {str(e).splitlines()[0]}"
        ) from None
    return builder


def _not_prepared(builder, data_dir) -> ValueError:
    where = data_dir or "~/tensorflow_datasets"
    return ValueError(
        f"TFDS dataset {builder.name!r} is not prepared in {where}: download and prepare it once "
        f"with `tfds build {builder.name} --data_dir=DIR` (ImageNet needs the manual download "
        f"described on its TFDS page), then pass --config.dataset.data_dir=DIR.")


def _tfds_split_size(builder, split) -> int:
    if len(builder.info.splits) == 0:  # metadata without split sizes (e.g. mocked): count
        n = int(builder.as_dataset(split=split, decoders=_skip()).cardinality())
        if n < 0:
            raise UserError(f"cannot tell the size of {builder.name}:{split}.")
        return n
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as e:
        raise UserError(f"no such split ({e}); the splits are {sorted(builder.info.splits)}, "
                         f"sliceable like 'train[:90%]'.") from None


def _skip():
    import tensorflow_datasets as tfds
    return {"image": tfds.decode.SkipDecoding()}


def _tfds_records(builder, split, shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """{"image": encoded bytes, "label": int32} without decoding (skipping stays cheap)."""
    import tensorflow_datasets as tfds

    has_label = "label" in builder.info.features
    # A fixed file order per seed (never reshuffled by a second iteration) for determinism.
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                  shuffle_reshuffle_each_iteration=False)
    ds = builder.as_dataset(split=split, decoders=_skip(), shuffle_files=shuffle_seed is not None,
                            read_config=read_config)
    return ds.map(lambda ex: {"image": ex["image"],
                              "label": tf.cast(ex["label"], tf.int32) if has_label
                              else tf.constant(-1, tf.int32)})


def _tfds_source(name: str, split: str, data_dir: Optional[str],
                 in_memory: Optional[bool]) -> Source:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    if "image" not in features:
        raise UserError(f"TFDS dataset {name!r} has no 'image' feature "
                         f"(features: {list(features.keys())}).")
    label = features["label"] if "label" in features else None
    num_classes = getattr(label, "num_classes", None)
    hw = tuple(features["image"].shape[:2])
    shape = (*hw, 3)
    try:  # opening the split (no reading yet) fails if the files are missing
        n = _tfds_split_size(builder, split)
        _tfds_records(builder, split)
    except AssertionError:
        raise _not_prepared(builder, data_dir) from None
    except (KeyError, ValueError) as e:
        raise UserError(f"TFDS dataset {name!r}, split {split!r}: {e}") from None
    fixed = None not in hw
    decoded_bytes = n * math.prod(hw) * 3 if fixed else None
    try:
        size = int(builder.info.dataset_size) or None  # bytes of the prepared files
    except (TypeError, ValueError):
        size = None

    if in_memory is not False and fixed and (in_memory or decoded_bytes <= MAX_DECODED_BYTES):
        ds = _tfds_records(builder, split).map(
            lambda ex: (augment_tf.decode(ex["image"]), ex["label"]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1024)
        parts = list(ds.as_numpy_iterator())
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts]).astype(np.int32)
        return Source(name, split, len(labels), num_classes, images.shape[1:], "array",
                      images, labels)
    if in_memory or (in_memory is None and size is not None and size <= MAX_ENCODED_BYTES):
        parts = list(_tfds_records(builder, split).batch(1024).as_numpy_iterator())
        images = np.array([b for p in parts for b in p["image"]], dtype=object)
        labels = np.concatenate([p["label"] for p in parts]).astype(np.int32)
        return Source(name, split, len(labels), num_classes, shape, "encoded", images, labels)

    def process_split(process_index: int, process_count: int):
        return split if process_count == 1 else tfds.even_splits(split, n=process_count)[
            process_index]

    def stream(process_index: int, process_count: int, shuffle_seed: Optional[int]):
        return _tfds_records(builder, process_split(process_index, process_count), shuffle_seed)

    def stream_sizes(process_count: int) -> list:
        return [_tfds_split_size(builder, process_split(p, process_count))
                for p in range(process_count)]

    return Source(name, split, n, num_classes, shape, "stream", stream=stream,
                  stream_sizes=stream_sizes)
