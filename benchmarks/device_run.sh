#!/usr/bin/env bash
# ONE call on the lent accelerator (at most 9 minutes), everything written to $OUT.
#
# Prepare here, once (both paths are git-ignored and travel through `carry`, ~45 MiB):
#   python benchmarks/make_cifar_npz.py --src ../shared/data/cifar10-train \
#       --out benchmarks/data/cifar10_train_jpeg.npz                      # 44.5 MiB
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform any -d .whl ml_collections==1.1.0  # 77 kB
# Then, with the device tool, from the repo root:
#   run(command="bash benchmarks/device_run.sh", carry=[".whl", "benchmarks/data"],
#       timeout_s=600)
# On any CPU, tiny (the test suite runs this where TensorFlow cannot be imported):
#   bash benchmarks/device_run.sh --smoke
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    SITE=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
        .whl/*.whl || { echo "error: could not install the carried wheels in .whl/"; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "error: ml_collections is missing here and no wheel was carried in .whl/ (see the top of $0)"
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/device_run.py --out "${OUT:-/tmp/device_run_out}" "$@"
