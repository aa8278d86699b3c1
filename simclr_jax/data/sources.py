"""Image sources: the embedded "digits", a folder of JPEG/PNG files ("folder:/path"), a numpy
archive ("npz:/path.npz"), or TFDS.

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

TensorFlow is imported only where it is used (TFDS, and the TF decoder when it imports): the
digits, npz archives and folders (decoded with PIL when TF is absent) load without it, so
`dataset.on_device` runs on machines that have no TensorFlow (`tf_support`).
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
from etils import epath

from simclr_jax.data import embedded, tf_support
from simclr_jax.errors import UserError
from simclr_jax.workdir import as_path

MAX_DECODED_BYTES = 1 << 30      # hold decoded uint8 pixels in memory up to 1 GiB
MAX_ENCODED_BYTES = 2 << 30      # hold a TFDS split's encoded records in memory up to 2 GiB
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAX_LISTED_BAD_FILES = 50
_SCAN_CACHE_ENV = "SIMCLR_JAX_CACHE_DIR"


def keep_tf_off_accelerators() -> None:
    """tf.data only needs the host: never let TensorFlow reserve GPU memory JAX needs (a no-op
    where TensorFlow does not import)."""
    tf_support.available()


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
        tf = tf_support.tensorflow(f"reading {self.name}")
        from simclr_jax.data import augment_tf
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
    if spec.startswith("npz:"):
        return _npz_source(spec[len("npz:"):], split)
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


def decode_pil(data: bytes) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> uint8 [H, W, 3] with PIL (grayscale and RGBA become RGB).
    PIL's JPEG IDCT may differ from TF's by a grey level or two on some pixels."""
    import io

    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def _scan_pil(paths: list, keep_shape: Optional[tuple]):
    """`_scan` without TensorFlow: PIL, one file after the other (undecodable files skipped)."""
    good, shapes, pixels = [], [], []
    for i, p in enumerate(paths):
        try:
            image = decode_pil(_read_bytes(os.fsencode(p)))
        except Exception:  # noqa: BLE001 - any unreadable file is skipped and listed
            continue
        good.append(i)
        shapes.append(image.shape)
        if keep_shape is not None:
            pixels.append(image if image.shape[:2] == tuple(keep_shape) else
                          np.zeros((*keep_shape, 3), np.uint8))   # dropped by the caller
    if not good:
        return np.zeros([0], np.int64), np.zeros([0, 3], np.int32), None
    return (np.asarray(good, np.int64), np.asarray(shapes, np.int32),
            np.stack(pixels) if keep_shape is not None else None)


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
    """Decode every file once (parallel tf.data; the same decoder the pipeline uses; PIL where
    TensorFlow does not import).

    Returns (good indices [n] int64, shapes [n, 3], pixels uint8 [n, H, W, 3] or None). Pixels
    are kept only when keep_shape=(H, W) is given; any image of another shape is reported by
    `shapes` and the caller drops the pixels.
    """
    if not tf_support.available():
        return _scan_pil(paths, keep_shape)
    tf = tf_support.tensorflow()
    from simclr_jax.data import augment_tf

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
    tf_support.tensorflow(f"dataset {name!r} (read through TensorFlow Datasets)")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError(f"dataset {name!r} is read through TensorFlow Datasets, which does not "
                        f"import here ({e}): pip install tensorflow-datasets, or use 'digits', "
                        f"'npz:/path.npz' or 'folder:/path'.") from None

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


def _tfds_records(builder, split, shuffle_seed: Optional[int] = None):
    """tf.data of {"image": encoded bytes, "label": int32} without decoding (skipping stays
    cheap)."""
    import tensorflow_datasets as tfds
    tf = tf_support.tensorflow()

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
    builder = _tfds_builder(name, data_dir)
    import tensorflow_datasets as tfds
    tf = tf_support.tensorflow()
    from simclr_jax.data import augment_tf
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


# ----------------------------------------------------------------------------- npz archives

def _npz_source(path: str, split: str) -> Source:
    """A numpy archive (np.savez, no pickles): "labels" int [N] and either "images" uint8
    [N, H, W, 3] or the encoded JPEG/PNG files of one size as "encoded" uint8 [total bytes] with
    "offsets" int64 [N + 1] (file i = encoded[offsets[i]:offsets[i + 1]]: CIFAR-10's 50,000 JPEGs
    are 47 MB against 154 MB of pixels). Decoded with PIL, no TensorFlow. Its one split is
    "train" (or "all"), sliceable per class like a folder: "train[:4500]", "train[4500:]"."""
    base, start, stop = parse_split(split)
    if base not in ("train", "all"):
        raise UserError(f"an npz dataset has one split, 'train' (or 'all'), optionally sliced "
                        f"per class like 'train[:90%]' or 'train[4500:]'; got {split!r}.")
    images, labels = _load_npz(str(as_path(path)))
    idx = slice_per_class(labels, start, stop)
    if len(idx) == 0:
        raise UserError(f"split {split!r} of {path!r} selects no images.")
    if len(idx) < len(labels):
        images, labels = images[idx], labels[idx]
    classes = int(labels.max()) + 1 if (labels >= 0).any() else None
    return Source(name=f"npz:{path}", split=split, num_examples=len(idx), num_classes=classes,
                  image_shape=images.shape[1:], storage="array", images=images, labels=labels)


@functools.lru_cache(maxsize=1)
def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, H, W, 3], int32 [N]) of an archive; decoded once for all its splits."""
    if not epath.Path(path).is_file():
        raise UserError(f"npz dataset {path!r} does not exist; use "
                        f"--config.dataset.name=npz:/path/to/file.npz.")
    with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as z:
        keys = set(z.files)
        if "labels" not in keys or not ({"images"} <= keys or {"encoded", "offsets"} <= keys):
            raise UserError(f"{path}: expected arrays 'labels' and 'images' (uint8 [N, H, W, 3]) "
                            f"or 'encoded' + 'offsets' (JPEG/PNG bytes); found {sorted(keys)}.")
        labels = np.asarray(z["labels"]).astype(np.int32)
        if "images" in keys:
            images = np.asarray(z["images"])
        else:
            encoded, offsets = np.asarray(z["encoded"]), np.asarray(z["offsets"])
            images = np.stack([decode_pil(encoded[offsets[i]:offsets[i + 1]].tobytes())
                               for i in range(len(offsets) - 1)])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{path}: 'images' must be uint8 [N, H, W, 3]; got {images.dtype} "
                        f"{images.shape}.")
    if len(images) != len(labels):
        raise UserError(f"{path}: {len(images)} images but {len(labels)} labels.")
    return images, labels
