"""Under 8 CPU devices: every estimator's score_matrix split over sources, samples and a 2-D mesh.

Run by test_mesh.py (XLA_FLAGS must be set before jax is imported, so this is
its own process); prints one JSON object on its last line.
"""

import json
import os
import warnings

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scale_data import inputs

import jaxtransfer as jt
from jaxtransfer.estimators import _matrix_core as sm

warnings.simplefilter("ignore")
mesh1 = jax.make_mesh((8,), ("d",))
mesh2 = jax.make_mesh((4, 2), ("s", "n"))
LAYOUTS = {
    "sources": dict(mesh=mesh1),
    "samples": dict(mesh=mesh1, sample_axis="d"),
    "both": dict(mesh=mesh2, source_axis="s", sample_axis="n"),
}


def hlo(name, src, tgt, opts, **kw):
    """The compiled program of score_matrix's jitted core for this layout, as text."""
    fn = jt.estimators.get_estimator(name)
    checked = fn.info.check(src, tgt, opts, 1)
    layout = sm._layout(checked.source, kw["mesh"], kw.get("source_axis"), kw.get("sample_axis"))
    a, b, c, d = sm._place(layout, checked.source, checked.target, None, None)
    static = tuple(sorted(checked.static.items()))
    lowered = sm._matrix.lower(
        a, b, c, d, checked.dynamic, info=fn.info, static=static, batch=1, layout=layout
    )
    return lowered.compile().as_text()


out = {}
for name in jt.available_estimators():
    src, tgt, opts = inputs(name, s=10, n=60)  # S and n not multiples of the devices: padded
    entry = {"single": np.asarray(jt.score_matrix(name, src, tgt, **opts)).tolist()}
    for label, kw in LAYOUTS.items():
        try:
            r = jt.score_matrix(name, src, tgt, **kw, **opts)
            entry[label] = np.asarray(r).tolist()
            entry[label + "_spec"] = str(r.sharding.spec)
        except ValueError as err:
            entry[label] = "ValueError: " + str(err)
    s8, _, _ = inputs(name, s=8, n=64)
    t8 = inputs(name, s=8, n=64)[1]
    entry["single8"] = np.asarray(jt.score_matrix(name, s8, t8, **opts)).tolist()
    text = hlo(name, s8, t8, opts, mesh=mesh1)
    entry["sources_all_gather"] = "all-gather" in text
    if name in ("linear_mse", "logme", "nce"):
        split = hlo(name, s8, t8, opts, mesh=mesh1, sample_axis="d")
        entry["samples_all_reduce"] = "all-reduce" in split
        entry["samples_all_gather"] = "all-gather" in split
    # follow the inputs: an S-sharded jax.Array keeps its sharding through validation
    placed = jax.device_put(s8, NamedSharding(mesh1, P("d")))
    checked = jt.estimators.get_estimator(name).info.check(placed, t8, opts, 1)
    entry["validated_sharding"] = str(getattr(checked.source.sharding, "spec", checked.source.sharding))
    r = jt.score_matrix(name, placed, t8, **opts)
    entry["followed"] = np.asarray(r).tolist()
    entry["followed_spec"] = str(r.sharding.spec)
    out[name] = entry
print(json.dumps(out))
