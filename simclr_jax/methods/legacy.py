"""Config values of workdirs written before the method plug-in, and their current names.

Head kinds and the conv initialiser used to be named after the method that introduced them;
they are now named for what they are. A stored config.json (or history.jsonl start) is read
through `migrate_config`, so an old run resumes, evaluates and exports unchanged. The checkpoint
side (the method's fields that moved into `method_state`) is in simclr_jax/checkpoint.py.
"""
from __future__ import annotations

import copy

HEAD_KINDS = {"simclr": "bn_mlp", "moco_v1": "linear", "moco_v2": "mlp",
              "moco_v3": "bn_mlp_nonaffine", "byol": "bn_mlp_biased"}
CONV_INITS = {"simclr": "fan_in_truncated_normal"}
# Keys added since, with the value the older code behaved as (so resuming an old run with the
# default is not a change of its data stream or state).
ADDED_KEYS = {("dataset", "on_device"): False}


def migrate_config(config: dict | None) -> dict | None:
    """A stored config (plain dict) with renamed values replaced by their current names."""
    if not isinstance(config, dict):
        return config
    config = copy.deepcopy(config)
    head, model = config.get("head"), config.get("model")
    if isinstance(head, dict) and head.get("kind") in HEAD_KINDS:
        head["kind"] = HEAD_KINDS[head["kind"]]
    if isinstance(model, dict) and model.get("conv_init") in CONV_INITS:
        model["conv_init"] = CONV_INITS[model["conv_init"]]
    for (section, key), value in ADDED_KEYS.items():
        if isinstance(config.get(section), dict):
            config[section].setdefault(key, value)
    return config
