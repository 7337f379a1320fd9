"""Feature-extraction throughput of the zoo's backbones, against a plain ``nnx.jit`` loop, in one run.

For each backbone, ``count`` random uint8 images of side ``resize`` (so the
preprocessing is the centre crop to the zoo's default input size and the
normalisation) are pushed through :func:`jaxtransfer.features.extract` in
batches of ``batch`` (features and logits kept, on the device). Reported:

* ``extract``: the whole call, host batches to device features, median of
  ``repeats`` runs after a warm-up run that compiles;
* ``nnx_jit_loop``: the baseline a user would write, ``nnx.jit`` of the model's
  preprocess + forward called per batch, outputs concatenated on the device;
* ``device_only``: the compiled step alone on a device-resident batch, the
  ceiling for this batch size.

Throughput does not depend on the weights' values, so random initialisation
is used unless ``--pretrained`` (which needs the cached weights).

    python bench/bench_features.py --out bench/results/features.json
    python bench/bench_features.py --tiny --out /tmp/f.json     # smoke run, part of the tests
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import report, write_report

from jaxtransfer import zoo
from jaxtransfer.apps import time_call
from jaxtransfer.features import extract


def _case(name, count, batch, repeats, pretrained, size=None, device_only=True):
    model = zoo.load(name, pretrained=pretrained)
    pre = model.preprocess if size is None else model.preprocess._replace(size=size, resize=size)
    model.preprocess = pre
    side = pre.resize
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)

    start = time.perf_counter()
    extract(model, images[:batch], batch_size=batch, progress=False)  # compiles the step
    compile_s = time.perf_counter() - start
    ours = time_call(lambda: extract(model, images, batch_size=batch, progress=False).features, repeats)

    step = nnx.jit(lambda m, x: m.taps(m.preprocess(x)))

    def baseline():
        outs = [step(model, images[i : i + batch]) for i in range(0, count, batch)]
        return jnp.concatenate([o["features"] for o in outs]), jnp.concatenate([o["logits"] for o in outs])

    base = time_call(baseline, repeats)

    if device_only:  # one more compile: the step alone on a device-resident batch
        graphdef, state = nnx.split(model)
        pure = jax.jit(lambda s, x: nnx.merge(graphdef, s).taps(pre(x))["features"])
        on_device = jax.device_put(images[:batch])
        device_only = time_call(lambda: pure(state, on_device), max(repeats, 5))
    check = float(
        jnp.max(jnp.abs(extract(model, images, batch_size=batch, progress=False).features - baseline()[0]))
    )
    return {
        "case": name,
        "sizes": {"count": count, "batch": batch, "input": pre.size, "raw_side": side},
        "pretrained": pretrained,
        "feature_dim": model.feature_dim,
        "compile_s": compile_s,
        "jaxtransfer": ours,
        "baseline": base,
        "device_only": device_only or None,
        "images_per_s": count / ours["median_s"],
        "baseline_images_per_s": count / base["median_s"],
        "device_only_images_per_s": batch / device_only["median_s"] if device_only else None,
        "speedup": base["median_s"] / ours["median_s"],
        "max_abs_diff_vs_baseline": check,
    }


def run(tiny, count, batch, repeats, models, pretrained, device_only=True, out_path=None) -> dict:
    """Run the cases, writing the report after each one (a cut-off run keeps what it measured)."""
    results = []
    cases = (
        [("mobilenet_v2", 6, 4, 1, False, 64)]
        if tiny
        else [(m, count, batch, repeats, pretrained, None) for m in models]
    )
    fields = ("model", "count", "batch", "repeats", "pretrained", "size")
    config = {
        "cases": [dict(zip(fields, c, strict=True)) for c in cases],
        "device_only": device_only,
        "seed": 0,
    }
    for name, *args in cases:
        results.append(_case(name, *args, device_only=device_only))
        _print_row(results[-1])
        out = report(results, tiny, config)
        out["what"] = (
            "images per second through features.extract (features + logits kept), vs an nnx.jit loop"
        )
        write_report(out, out_path)
    return out


def _print_row(row):
    dev = row["device_only_images_per_s"]
    print(
        f"{row['case']:20s} {row['sizes']['input']:4d}px batch {row['sizes']['batch']:4d}: "
        f"extract {row['images_per_s']:8.1f} img/s, "
        f"nnx.jit loop {row['baseline_images_per_s']:8.1f} img/s ({row['speedup']:.2f}x), "
        + (f"device-only {dev:8.1f} img/s, " if dev else "")
        + f"compile {row['compile_s']:.1f} s",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one small model run (smoke test)")
    parser.add_argument("--count", type=int, default=256, help="images per run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(zoo.available()))
    parser.add_argument("--pretrained", action="store_true", help="load the real weights (cached)")
    parser.add_argument(
        "--no-device-only", action="store_true", help="skip the device-only timing (one compile less)"
    )
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    print(f"{jax.devices()[0]} jax {jax.__version__}", flush=True)
    run(
        args.tiny,
        args.count,
        args.batch,
        args.repeats,
        args.models,
        args.pretrained,
        not args.no_device_only,
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
