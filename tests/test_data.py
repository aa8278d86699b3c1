"""Data sources and pipelines: splits, corrupt files, TFDS, sharding, determinism and resumption."""
import io
import logging
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import PartitionSpec as P
from PIL import Image

from simclr_jax import parallel
from simclr_jax.data import aug_presets, augment_tf, embedded, pipeline, sources


def examples(src, process_index: int = 0, process_count: int = 1):
    """A source's examples in a fixed order, as tf.data of {"image": uint8, "label": int32}:
    the share of one of `process_count` processes (every example once over all of them)."""
    if not src.random_access:
        ds = src.stream(process_index, process_count, None)
        return ds.map(lambda ex: {"image": augment_tf.decode(ex["image"]), "label": ex["label"]})
    idx = np.arange(src.num_examples)[process_index::process_count]
    ds = tf.data.Dataset.from_tensor_slices((src.images[idx], src.labels[idx]))
    return ds.map(lambda r, y: {"image": src.read(r), "label": y})


@pytest.fixture(autouse=True)
def scan_cache_in_tmp(tmp_path, monkeypatch):
    """Keep the folder-scan cache out of the home directory and the lru cache per test."""
    monkeypatch.setenv("SIMCLR_JAX_CACHE_DIR", str(tmp_path / "cache"))
    sources._load_folder.cache_clear()


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8
    return parallel.make_mesh()


def plain_view(**kw):
    cfg = dict(crop_area_min=1.0, crop_area_max=1.0, crop_aspect_min=1.0, crop_aspect_max=1.0,
               flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    cfg.update(kw)
    return aug_presets.view(**cfg)


def toy_source(n, size=4):
    """Example k is a constant image of value k with label k: rows identify themselves."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                             (n, size, size, 3)).copy()
    return sources.Source(name="toy", split="train", num_examples=n, num_classes=n,
                          image_shape=(size, size, 3), storage="array", images=images,
                          labels=np.arange(n, dtype=np.int32))


def save(path, array, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def rand_image(h, w, seed, channels=3):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def to_np(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


# ----------------------------------------------------------------------------- digits

def test_digits_splits_are_balanced_disjoint_and_complete():
    _, labels = embedded.digits_arrays()
    train = embedded.digits_split_indices("train", labels)
    test = embedded.digits_split_indices("test", labels)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    for c in range(10):
        n_c = (labels == c).sum()
        assert abs((labels[train] == c).sum() - 0.8 * n_c) <= 0.5 + 1e-9
    np.testing.assert_array_equal(train, embedded.digits_split_indices("train", labels))

    tr, te, al = (sources.get_source("digits", s) for s in ("train", "test", "all"))
    assert (tr.num_examples, te.num_examples, al.num_examples) == (len(train), len(test), 1797)
    assert tr.num_classes == 10 and tr.image_shape == (32, 32, 3)
    assert tr.images.dtype == np.uint8 and tr.images.shape == (len(train), 32, 32, 3)
    np.testing.assert_array_equal(tr.labels, labels[train])
    half = sources.get_source("digits", "train[:50%]")
    for c in range(10):
        assert (half.labels == c).sum() == round((tr.labels == c).sum() / 2)


def test_digits_pixels_are_the_bilinear_upsampled_sklearn_digits():
    from sklearn.datasets import load_digits

    images, _ = embedded.digits_arrays()
    small = load_digits().images[:50, :, :, None] * 255 / 16                # [50, 8, 8, 1]
    ref = tf.image.resize(small, [32, 32], method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(images[:50, ..., 0], ref, atol=0.51)
    assert np.all(images[..., 0] == images[..., 1]) and np.all(images[..., 1] == images[..., 2])
    assert images.max() == 255


# ----------------------------------------------------------------------------- folders

def _folder_with_problems(root, size=None):
    """Two classes with JPEG/PNG (mixed case), a grayscale file, a nested file, a truncated JPEG,
    a garbage .png and a non-image. Returns {path: (label, pixels or None for lossy)}."""
    s = (lambda i: (10, 12)) if size else (lambda i: (10 + i, 12 + 2 * i))
    want = {}
    a = rand_image(*s(0), seed=1)
    save(f"{root}/cat/a.jpg", a)
    want["cat/a.jpg"] = (0, None)
    b = rand_image(*s(1), seed=2)
    save(f"{root}/cat/b.PNG", b, "PNG")
    want["cat/b.PNG"] = (0, b)
    g = rand_image(*s(2), seed=3, channels=1)
    save(f"{root}/cat/gray.png", g)
    want["cat/gray.png"] = (0, np.repeat(g[..., None], 3, -1))
    c = rand_image(*s(3), seed=4)
    save(f"{root}/dog/deep/c.png", c)
    want["dog/deep/c.png"] = (1, c)
    save(f"{root}/dog/d.jpeg", rand_image(*s(4), seed=5))
    want["dog/d.jpeg"] = (1, None)
    buf = io.BytesIO()
    Image.fromarray(rand_image(30, 30, seed=6)).save(buf, format="JPEG")
    with open(f"{root}/dog/truncated.jpg", "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    with open(f"{root}/dog/garbage.png", "wb") as f:
        f.write(np.random.default_rng(7).bytes(300))
    with open(f"{root}/dog/notes.txt", "w") as f:
        f.write("not an image")
    return want


@pytest.mark.parametrize("same_size", [True, False])
def test_folder_source_labels_and_corrupt_files(tmp_path, caplog, same_size):
    root = str(tmp_path / "images")
    want = _folder_with_problems(root, size=same_size)
    with caplog.at_level(logging.WARNING):
        src = sources.get_source(f"folder:{root}", "train")
    warnings = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 1
    assert "truncated.jpg" in warnings[0] and "garbage.png" in warnings[0]
    assert src.storage == ("array" if same_size else "file")
    assert src.num_examples == len(want) and src.num_classes == 2
    assert src.image_shape == ((10, 12, 3) if same_size else (None, None, 3))

    got = list(examples(src).as_numpy_iterator())
    assert len(got) == len(want)
    order = sorted(want, key=lambda p: (want[p][0], p))      # sorted classes, then paths
    assert [e["label"] for e in got] == [want[p][0] for p in order]
    for p, e in zip(order, got):
        assert e["image"].dtype == np.uint8 and e["image"].shape[-1] == 3
        if want[p][1] is not None:                            # lossless: exact pixels
            np.testing.assert_array_equal(e["image"], want[p][1])


def test_folder_scan_is_cached_and_still_reports(tmp_path, caplog):
    root = str(tmp_path / "images")
    _folder_with_problems(root, size=False)
    first = sources.get_source(f"folder:{root}", "train")
    assert os.listdir(tmp_path / "cache" / "folder_scan")
    sources._load_folder.cache_clear()
    with caplog.at_level(logging.WARNING):
        again = sources.get_source(f"folder:{root}", "train")
    assert any("truncated.jpg" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(first.images, again.images)


def test_folder_in_memory_holds_encoded_bytes(tmp_path):
    root = str(tmp_path / "images")
    _folder_with_problems(root, size=False)
    src = sources.get_source(f"folder:{root}", "train", in_memory=True)
    assert src.storage == "encoded" and isinstance(src.images[0], bytes)
    assert len(list(examples(src))) == src.num_examples


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        save(str(tmp_path / f"img{i}.png"), rand_image(6, 6, seed=i))
    src = sources.get_source(f"folder:{tmp_path}", "all")
    assert src.num_examples == 3 and src.num_classes is None
    np.testing.assert_array_equal(src.labels, [-1, -1, -1])


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sources.get_source(f"folder:{tmp_path}/missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        sources.get_source(f"folder:{tmp_path}/empty", "train")
    save(str(tmp_path / "one" / "x.png"), rand_image(4, 4, seed=0))
    with pytest.raises(ValueError, match="one split"):
        sources.get_source(f"folder:{tmp_path}/one", "test")
    with pytest.raises(ValueError, match="cannot parse split"):
        sources.get_source(f"folder:{tmp_path}/one", "train[::2]")


def test_folder_split_slices_apply_per_class(tmp_path):
    # Class c image i is a constant PNG of value 10 * c + i; names sort in i order.
    n = 10
    for c, name in enumerate(["ant", "bee"]):
        for i in range(n):
            save(str(tmp_path / name / f"{i:02d}.png"), np.full((4, 4, 3), 10 * c + i, np.uint8))
    values = lambda s: sorted(int(e["image"][0, 0, 0]) for e in examples(s).as_numpy_iterator())
    per_class = lambda sl: sorted(10 * c + i for c in range(2) for i in list(range(n))[sl])
    spec = f"folder:{tmp_path}"
    assert values(sources.get_source(spec, "train[:4]")) == per_class(slice(None, 4))
    assert values(sources.get_source(spec, "train[4:]")) == per_class(slice(4, None))
    assert values(sources.get_source(spec, "train[:90%]")) == per_class(slice(None, 9))
    assert values(sources.get_source(spec, "train[-10%:]")) == per_class(slice(-1, None))
    assert values(sources.get_source(spec, "train[20%:50%]")) == per_class(slice(2, 5))


# ----------------------------------------------------------------------------- TFDS

def test_tfds_cifar10_mock_in_memory_and_streamed():
    with tfds.testing.mock_data(num_examples=24):
        ref = list(tfds.load("cifar10", split="train").as_numpy_iterator())
        src = sources.get_source("cifar10", "train")
        streamed = sources.get_source("cifar10", "train", in_memory=False)
    assert src.storage == "array" and streamed.storage == "stream"
    assert src.num_examples == streamed.num_examples == 24
    assert src.num_classes == 10 and src.image_shape == (32, 32, 3)
    for got_source in (src, streamed):
        with tfds.testing.mock_data(num_examples=24):
            got = list(examples(got_source).as_numpy_iterator())
        assert len(got) == 24
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g["image"], r["image"])
            assert g["label"] == r["label"]


def test_tfds_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'"):
        sources.get_source("no_such_dataset_xyz", "train")
    with pytest.raises(ValueError, match="not prepared.*data_dir"):
        sources.get_source("cifar10", "train", data_dir=str(tmp_path))


class TinyImagesForSimclrTest(tfds.core.GeneratorBasedBuilder):
    """A real (prepared, on-disk) TFDS dataset with variable image sizes and 3 classes."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30)}

    def _generate_examples(self, n):
        for i in range(n):
            image = np.full((6 + i % 3, 8, 3), i, np.uint8)
            yield i, {"image": image, "label": i % 3}


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyImagesForSimclrTest(data_dir=data_dir).download_and_prepare()
    return TinyImagesForSimclrTest.name, data_dir


def test_tfds_prepared_dataset_streams_per_process(tiny_tfds, mesh):
    name, data_dir = tiny_tfds
    src = sources.get_source(name, "train[:50%]", data_dir=data_dir, in_memory=False)
    assert src.storage == "stream" and src.num_examples == 15 and src.num_classes == 3
    # Example i has pixel value i. TFDS shuffled the records when preparing, so the first 50%
    # is some 15 distinct examples; three processes share them, each exactly once.
    ids = lambda ds: [int(e["image"][0, 0, 0]) for e in ds.as_numpy_iterator()]
    whole = ids(examples(src))
    assert len(set(whole)) == 15
    shares = [ids(examples(src, p, 3)) for p in range(3)]
    assert sorted(sum(shares, [])) == sorted(whole) and src.stream_sizes(3) == [5, 5, 5]
    seen = []
    for batch in pipeline.eval_batches(src, global_batch_size=8, image_size=8, mesh=mesh):
        b = to_np(batch)
        seen += list(np.round(b["image"][b["mask"], 0, 0, 0] * 255).astype(int))
    assert sorted(seen) == sorted(whole)
    mem = sources.get_source(name, "train", data_dir=data_dir)
    assert mem.storage == "encoded" and mem.image_shape == (None, None, 3)


# ----------------------------------------------------------------------------- pretrain_batches

def test_pretrain_batches_shapes_sharding_and_views(mesh):
    src = sources.get_source("digits", "train")
    aug = aug_presets.two_views(aug_presets.simclr(0.5, 0.0), aug_presets.simclr(0.5, 0.0))
    batch = next(pipeline.pretrain_batches(src, aug, global_batch_size=16, image_size=16, seed=0,
                                           mesh=mesh))
    assert set(batch) == {"view1", "view2", "label", "index"}
    for k in ("view1", "view2"):
        assert batch[k].shape == (16, 16, 16, 3) and batch[k].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    for arr in batch.values():
        assert arr.sharding.spec == P("data") and len(arr.addressable_shards) == 8
        assert arr.addressable_shards[0].data.shape[0] == 2
    assert not np.allclose(np.asarray(batch["view1"]), np.asarray(batch["view2"]))


def test_pretrain_batches_deterministic_and_resumable(mesh):
    src = sources.get_source("digits", "train")
    aug = aug_presets.two_views(aug_presets.byol_view1(), aug_presets.byol_view2())
    run = lambda seed, start, n: [to_np(b) for b, _ in zip(pipeline.pretrain_batches(
        src, aug, global_batch_size=16, image_size=16, seed=seed, start_step=start, mesh=mesh),
        range(n))]
    full, again, resumed, other = run(0, 0, 5), run(0, 0, 5), run(0, 3, 2), run(1, 0, 1)
    for a, b in zip(full, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    for a, b in zip(full[3:5], resumed):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(full[0]["view1"], other[0]["view1"])


def test_pretrain_epochs_are_permutations_and_rows_match_labels(mesh):
    src = toy_source(64)
    aug = aug_presets.two_views(plain_view(), plain_view(flip_prob=1.0))
    it = pipeline.pretrain_batches(src, aug, global_batch_size=16, image_size=4, seed=3, mesh=mesh)
    batches = [to_np(next(it)) for _ in range(8)]                           # two epochs
    labels = np.concatenate([b["label"] for b in batches])
    assert sorted(labels[:64]) == list(range(64)) and sorted(labels[64:]) == list(range(64))
    assert not np.array_equal(labels[:64], labels[64:])
    assert not np.array_equal(labels[:64], np.arange(64))
    for b in batches:   # the view of each row is the image of that row's example
        np.testing.assert_allclose(b["view1"][:, 0, 0, 0], b["label"] / 255.0, atol=1e-6)
        np.testing.assert_allclose(b["view2"][:, 0, 0, 0], b["label"] / 255.0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("on_device", [False, True])
def test_encoded_records_give_the_views_of_their_decoded_pixels(mesh, fmt, on_device):
    """Each image is decoded once for all its views: a source of encoded files gives exactly
    the batches of a source holding the decoder's pixels, whatever the views' policies."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:20, 0:24]
    pixels = [np.clip(np.stack([yy * 9, xx * 7, (yy + xx) * 4], -1) + rng.integers(0, 40, 3),
                      0, 255).astype(np.uint8) for _ in range(32)]
    encoded = []
    for p in pixels:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format=fmt)
        encoded.append(buf.getvalue())
    decoded = np.stack([augment_tf.decode(tf.constant(e)).numpy() for e in encoded])
    common = dict(name="toy", split="train", num_examples=32, num_classes=32,
                  labels=np.arange(32, dtype=np.int32))
    enc_src = sources.Source(image_shape=(None, None, 3), storage="encoded",
                             images=np.array(encoded, dtype=object), **common)
    dec_src = sources.Source(image_shape=(20, 24, 3), storage="array", images=decoded, **common)
    aug = aug_presets.two_views(aug_presets.simclr(), aug_presets.byol_view2(),
                                on_device=on_device)
    run = lambda src: to_np(next(pipeline.pretrain_batches(
        src, aug, global_batch_size=16, image_size=12, seed=4, start_step=3, mesh=mesh)))
    a, b = run(enc_src), run(dec_src)
    for k in ("view1", "view2", "label"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["view1"], a["view2"])


def test_pretrain_three_views(mesh):
    aug = aug_presets.two_views(plain_view(), plain_view())
    with pytest.raises(ValueError, match="view3"):
        pipeline.pretrain_batches(toy_source(32), aug, global_batch_size=16, image_size=4,
                                  seed=0, mesh=mesh, num_views=3)
    aug.view3 = plain_view()
    batch = next(pipeline.pretrain_batches(toy_source(32), aug, global_batch_size=16,
                                           image_size=4, seed=0, mesh=mesh, num_views=3))
    assert set(batch) == {"view1", "view2", "view3", "label", "index"}


def test_pretrain_streamed_source_resumes_across_epochs(tiny_tfds, mesh):
    name, data_dir = tiny_tfds
    src = sources.get_source(name, "train", data_dir=data_dir, in_memory=False)
    aug = aug_presets.two_views(plain_view(), aug_presets.simclr(0.5, 0.0))
    run = lambda start, n: [to_np(b) for b, _ in zip(pipeline.pretrain_batches(
        src, aug, global_batch_size=8, image_size=8, seed=0, start_step=start, mesh=mesh),
        range(n))]
    # 30 examples, batch 8: epochs of 24 (3 batches); resume in the middle of epoch 1.
    full, resumed = run(0, 7), run(4, 3)
    for a, b in zip(full[4:], resumed):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    ids = [np.round(b["view1"][:, 0, 0, 0] * 255).astype(int) for b in full]
    epoch0, epoch1 = np.concatenate(ids[:3]), np.concatenate(ids[3:6])
    assert len(set(epoch0)) == 24 and len(set(epoch1)) == 24
    assert not np.array_equal(epoch0, epoch1)


def test_pretrain_batch_errors(mesh):
    aug = aug_presets.two_views(plain_view(), plain_view())
    with pytest.raises(ValueError, match=r"8 devices.*e\.g\. --config\.batch_size=8 or 16"):
        pipeline.pretrain_batches(toy_source(64), aug, global_batch_size=12, image_size=4,
                                  seed=0, mesh=mesh)
    with pytest.raises(ValueError, match="8 examples, fewer than one global batch"):
        pipeline.pretrain_batches(toy_source(8), aug, global_batch_size=16, image_size=4,
                                  seed=0, mesh=mesh)


# ----------------------------------------------------------------------------- eval_batches

def test_eval_batches_cover_every_example_once_with_mask(mesh):
    src = toy_source(37)
    batches = [to_np(b) for b in pipeline.eval_batches(src, global_batch_size=16, image_size=4,
                                                       mesh=mesh)]
    assert len(batches) == 3
    for b in batches:
        assert b["image"].shape == (16, 4, 4, 3) and b["mask"].dtype == bool
        assert batches[0]["label"].dtype == np.int32
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    pixels = np.concatenate([b["image"][:, 0, 0, 0] for b in batches])
    assert mask.sum() == 37
    assert sorted(labels[mask]) == list(range(37))
    np.testing.assert_allclose(pixels[mask], labels[mask] / 255.0, atol=1e-6)
    assert np.all(labels[~mask] == -1)
    with pytest.raises(ValueError, match="8 devices"):
        pipeline.eval_batches(src, global_batch_size=20, image_size=4, mesh=mesh)


def test_eval_batches_imagenet_normalize():
    src = toy_source(8)
    mesh = parallel.make_mesh()
    b = to_np(next(pipeline.eval_batches(src, global_batch_size=8, image_size=4, mesh=mesh,
                                         normalize="imagenet")))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(b["image"][:, 0, 0], (b["label"][:, None] / 255.0 - mean) / std,
                               atol=1e-5)
