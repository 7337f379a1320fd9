"""One process of the two-process ``jax.distributed`` test (run by test_distributed.py, not collected).

Usage: python _worker.py PORT PROCESS_ID OUT_JSON. Two CPU devices per process,
gloo collectives, one 4-device mesh. Both processes generate the same data
from one seed; each feeds only its own slice (of the sources, then of the
samples) and process 0 writes the gathered scores.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from scale_data import ESTIMATORS, inputs  # noqa: E402

import jaxtransfer as jt  # noqa: E402

mesh = jax.make_mesh((4,), ("x",))


def global_array(local, spec):
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)


result = {"devices": jax.device_count(), "local_devices": jax.local_device_count()}
for name in ESTIMATORS:
    src, tgt, opts = inputs(name)
    s, n = src.shape[:2]
    by_source = global_array(src[pid * s // 2 : (pid + 1) * s // 2], P("x"))
    replicated = global_array(tgt, P())
    by_sample = global_array(src[:, pid * n // 2 : (pid + 1) * n // 2], P(None, "x"))
    targets_by_sample = global_array(tgt[:, pid * n // 2 : (pid + 1) * n // 2], P(None, "x"))
    a = jt.score_matrix(name, by_source, replicated, **opts)
    b = jt.score_matrix(name, by_sample, targets_by_sample, **opts)
    result[name] = {
        "sources": np.asarray(multihost_utils.process_allgather(a, tiled=True)).tolist(),
        "samples": np.asarray(multihost_utils.process_allgather(b, tiled=True)).tolist(),
        "sources_spec": str(a.sharding.spec),
    }
if pid == 0:
    with open(out, "w") as fh:
        json.dump(result, fh)
jax.distributed.shutdown()
