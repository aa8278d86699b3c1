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
