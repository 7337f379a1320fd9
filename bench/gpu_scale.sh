#!/usr/bin/env bash
# The scale issue's GPU measurements with `jaxtransfer bench`, in one run on a lent GPU machine
# (jax, flax and optax preinstalled, no network; this package need not be installed: it runs from
# the checkout with PYTHONPATH, the way bench/gpu_checks.sh does). Writes JSON and logs under $OUT.
#
#   1. LogME + Linear MSE + NCE, 1,000 sources x 100 targets, n = 10,000, d = 1,024, C = 10 target
#      classes, Cz = 1,000 source classes (NCE's source labels: a 1000-class model's argmax), with
#      the gram/eigh stage floors. Goal <= 3.3 s end to end for the three (H100 floor about 2.5 s).
#   2. Binary NCE, 1,000 x 1,000 labelings, n = 10,000 (floor about 0.43 ms by a one-hot product).
#
# Memory: the 1,000 sources' features are 1000 x 10000 x 1024 float32 = 41.0 GB, made on the device
# from a PRNG key (never on the host). With XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 the allocator limit is
# about 127 GB on an H200 (141 GB) and 72 GB on an 80 GB H100; the bench holds the sources at once
# when they take at most half of it (--memory-fraction 0.5): one chunk on an H200, two chunks of
# 500 on an H100 (the time is then the chunks' medians summed; the JSON says so). Besides the
# sources: the stage timings' 1000 Gram matrices and their eigenvectors (2 x 4.2 GB), the one-hot
# targets (100 x 10000 x 10 float32, 40 MB) and score_matrix's per-source work (one source per
# step for LogME and Linear MSE: about 0.1 GB). Device time: about 4 minutes on an H100/H200.
set -u -o pipefail
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
export PYTHONPATH="$PWD:$PWD/kernels:${PYTHONPATH:-}"
OUT="${OUT:-/tmp/gpu-scale}"
mkdir -p "$OUT"
bench() { local limit=$1; shift; timeout "$limit" python3 -m jaxtransfer bench "$@" 2>&1 | grep -v "cuda_timer"; }
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# a smoke run first (seconds), so that a broken install fails before the large runs
bench 120 --estimator logme --estimator linear_mse --estimator nce --sources 8 --targets 4 \
  --samples 1000 --dim 64 --repeats 2 --matmul-size 2048 --quiet --out "$OUT/bench_smoke.json" || exit 1
bench 420 --estimator logme --estimator linear_mse --estimator nce --sources 1000 --targets 100 \
  --samples 10000 --dim 1024 --classes 10 --source-classes 1000 --repeats 3 \
  --out "$OUT/bench_1000x100.json"
bench 150 --estimator nce --sources 1000 --targets 1000 --samples 10000 --classes 2 \
  --source-classes 2 --repeats 5 --out "$OUT/bench_nce_binary_1000x1000.json"
ls -l "$OUT"
