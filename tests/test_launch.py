"""Launch scripts: --dry-run prints the exact commands (gcloud / venv / trainer)."""
import os
import subprocess

from tiny_configs import ROOT


def dry(script, *args):
    args = list(args)
    cut = args.index("--") if "--" in args else len(args)   # options end at "--"
    args = args[:cut] + ["--dry-run"] + args[cut:]
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.replace("\\", "")  # drop printf %q escapes


def test_tpu_vm_lifecycle_commands():
    common = ["--name", "ssl", "--zone", "us-central2-b"]
    assert "tpu-vm create ssl" in dry("tpu_vm.sh", "create", *common, "--type", "v4-32")
    install = dry("tpu_vm.sh", "install", *common)
    assert "--worker=all" in install and "pip install" in install
    run = dry("tpu_vm.sh", "train", *common, "--config", "configs/simclr_v1.py:imagenet",
              "--workdir", "gs://b/r", "--", "--config.batch_size=1024")
    assert "--worker=all" in run and "simclr_jax.main" in run
    assert "configs/simclr_v1.py:imagenet" in run and "--config.batch_size=1024" in run
    assert "tensorboard" in dry("tpu_vm.sh", "tensorboard", *common, "--workdir", "gs://b/r")
    assert "tpu-vm delete ssl" in dry("tpu_vm.sh", "delete", *common)


def test_gpu_host_commands():
    out = dry("gpu_host.sh", "--config", "configs/moco_v2.py:cifar10", "--workdir", "/tmp/w")
    assert "jax[cuda12]" in out.replace("\\", "")
    assert "simclr_jax.main --config configs/moco_v2.py:cifar10 --workdir /tmp/w" in out


def test_missing_arguments_fail_clearly():
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "create"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--name and --zone are required" in r.stderr


def test_tpu_vm_train_passes_the_command_unchanged():
    """No cluster flags (JAX detects the slice), arguments kept whole, the trainer's exit status
    kept through the log pipe (status 3 = stopped with a checkpoint: run again)."""
    common = ["--name", "ssl", "--zone", "z"]
    out = dry("tpu_vm.sh", "train", *common, "--config", "configs/moco_v3.py:imagenet",
              "--workdir", "gs://b/r")
    assert ("python3 -m simclr_jax.main --config=configs/moco_v3.py:imagenet "
            "--workdir=gs://b/r") in out
    assert "set -o pipefail" in out and "coordinator" not in out and "process_id" not in out


def test_slurm_batch_script():
    out = dry("slurm.sh", "--nodes", "2", "--gpus-per-node", "4", "--config",
              "configs/byol.py:imagenet", "--workdir", "/shared/r", "--partition", "gpu", "--",
              "--config.batch_size=512")
    # One JAX process per GPU: JAX's SLURM detection binds task SLURM_LOCALID to that GPU.
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --signal=TERM@120", "#SBATCH --requeue", "#SBATCH --partition=gpu"):
        assert line in out.splitlines(), out
    assert ("-m simclr_jax.main --config configs/byol.py:imagenet --workdir /shared/r "
            "--config.batch_size=512") in out
    assert "coordinator" not in out        # SLURM_* variables are all JAX needs
    assert "if [[ $status == 3 ]]" in out and 'scontrol requeue "$SLURM_JOB_ID"' in out
