"""What a run wrote to TensorBoard: {tag: plugin} ("scalars", "images", ...) from its events."""
import glob
import os

import tensorflow as tf


def logged_tags(workdir) -> dict:
    tags = {}
    for path in glob.glob(os.path.join(str(workdir), "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags[value.tag] = value.metadata.plugin_data.plugin_name or "scalars"
    return tags


def scalar_series(workdir, tag: str) -> dict:
    """{step: value} of one scalar tag in a run's events (the last value written per step)."""
    series = {}
    for path in sorted(glob.glob(os.path.join(str(workdir), "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    series[event.step] = float(tf.make_ndarray(value.tensor)
                                               if value.HasField("tensor") else value.simple_value)
    return series
