"""--config file of the multi-process tests: a real recipe shrunk to test size, loaded by the
real CLI in every process. Argument: "<config file>" or "<config file>+<preset>", e.g.
    --config tests/multiprocess_config.py:moco_v2.py+cifar10
Pretraining recipes get `tiny_configs.tiny` (ResNet-10 at width 1/8, 8 px digits, 3 steps);
evaluation protocols 2 steps of SGD at batch 16.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny_configs import load_config, tiny  # noqa: E402

PROTOCOLS = ("knn_eval.py", "linear_eval.py", "finetune.py", "distill.py")
IMAGE_SIZE = 8


def _protocol(c):
    c.unlock()
    if "batch_size" in c:
        c.batch_size, c.num_epochs, c.num_steps = 16, None, 2
        c.warmup_epochs = 0.0
        c.optimizer.name, c.optimizer.weight_decay = "sgd", 0.0
        c.log_every_steps, c.checkpoint_every_steps = 1, 1000
    if "finetune" in c:   # the preset's dataset -> the pretraining run's (digits)
        c.dataset.name = c.dataset.train_split = c.dataset.eval_split = None
    if "model" in c:   # distillation's student
        c.model.depth, c.model.width, c.model.stem = 10, 0.125, "cifar"
    c.eval.batch_size = 64
    c.lock()
    return c


def get_config(arg):
    file, _, preset = arg.partition("+")
    if file in PROTOCOLS:
        return _protocol(load_config(file, preset or None))
    return tiny(file, preset or None, image_size=IMAGE_SIZE, steps=3)
