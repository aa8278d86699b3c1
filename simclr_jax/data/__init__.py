"""Data: sources (digits / folder / npz / TFDS), per-image augmentations, tf.data pipelines, and
the on-device dataset (`device_dataset`: the split on the devices, views made in the step).

    sources.get_source(spec, split, data_dir=None) -> Source
    aug_presets.simclr(...), moco_v1(), moco_v2(), byol_view1/2(), moco_v3_view1/2(), two_views()
    augment_tf.augment_view(image_uint8, view_cfg, image_size, seed) -> float32 [S, S, 3]
    pipeline.pretrain_batches(...), pipeline.eval_batches(...) -> iterators of global jax.Arrays

Submodules are imported explicitly (not here) so config files can import `aug_presets` without
loading TensorFlow; only `pipeline`, `augment_tf` and TFDS/TF decoding in `sources` need it.
"""
