"""The cost of an estimator inside a training step, and of a metric inside an eval step.

The small CNN of ``examples/train_with_estimators.py`` (two 3×3 convolutions, global average
pooling, 64 ReLU features, a 2-class head), Adam, 8×8 images built on the device with a fixed
seed (the images' content does not change the cost). Timed, as ratios to the plain step:

* train steps (value, gradient and Adam update, one jitted program each): the source task's
  cross-entropy on a batch (``plain``); plus −Linear MSE (λ = 1e-3, one-hot targets), −LogME or
  −LEEP (of the head's softmax) of the target task on a second batch of the same size, as an
  auxiliary loss (``aux_linear_mse``, ``aux_logme``, ``aux_leep``);
* eval steps on one batch: the forward pass alone (``eval_forward``); the forward pass plus a
  :mod:`jaxtransfer.metrics` LogME update (``eval_logme_metric``: statistics added, no
  finalize); and the forward pass plus the whole-array LogME of the batch (``eval_logme``).
  ``logme_metric_compute`` is the metric's finalize alone (once per evaluation, not per batch).

Every program is compiled first (``jax.jit(f).lower(...).compile()``, compile time reported),
run once as a warm-up, then all run in turn in every round (so load on a shared machine falls
on all alike), each repetition ending in ``jax.block_until_ready``; medians and quartiles; the
figure to quote is the ratio of medians to ``plain`` (train) or ``eval_forward`` (eval).
Set ``OPENBLAS_NUM_THREADS=1`` on a shared CPU.

    OPENBLAS_NUM_THREADS=1 python bench/bench_training_step.py    # batch 256
    python bench/bench_training_step.py --tiny --out /tmp/training_step.json    # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the example's CNN
from bench_speed import report, write_report
from train_with_estimators import CNN, L2, TARGET_CLASSES

import jaxtransfer as jt
from jaxtransfer import metrics
from jaxtransfer.apps import compile_timed

SIZES = {"batch": 256, "image": 8}
TINY = {"batch": 32, "image": 8}


def make_train_steps(graphdef, tx):
    """name -> a train step (state, opt_state, x, y, aux_x, aux_y) -> (state, opt_state, loss)."""

    def cross_entropy(model, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    aux = {
        "plain": None,
        "aux_linear_mse": lambda m, x, y: jt.linear_mse(
            m.features(x), jax.nn.one_hot(y, TARGET_CLASSES), l2=L2
        ),
        "aux_logme": lambda m, x, y: jt.logme(m.features(x), y, num_target_classes=TARGET_CLASSES),
        "aux_leep": lambda m, x, y: jt.leep(
            jax.nn.softmax(m(x), axis=-1), y, num_target_classes=TARGET_CLASSES
        ),
    }

    def make(term):
        def loss_fn(state, x, y, aux_x, aux_y):
            model = nnx.merge(graphdef, state)
            loss = cross_entropy(model, x, y)
            if term is not None:
                loss = loss - term(model, aux_x, aux_y)
            return loss

        def step(state, opt_state, x, y, aux_x, aux_y):
            loss, grads = jax.value_and_grad(loss_fn)(state, x, y, aux_x, aux_y)
            updates, opt_state = tx.update(grads, opt_state, state)
            return optax.apply_updates(state, updates), opt_state, loss

        return step

    return {name: make(term) for name, term in aux.items()}


def make_eval_steps(graphdef, metric_graphdef):
    """name -> an eval step (state, metric_state, x, y) -> something to block on."""

    def forward(state, metric_state, x, y):
        return jnp.sum(nnx.merge(graphdef, state).features(x))

    def with_metric(state, metric_state, x, y):
        metric = nnx.merge(metric_graphdef, metric_state)
        metric.update(features=nnx.merge(graphdef, state).features(x), targets=y)
        return nnx.state(metric)

    def with_logme(state, metric_state, x, y):
        f = nnx.merge(graphdef, state).features(x)
        return jt.logme(f, y, num_target_classes=TARGET_CLASSES)

    return {"eval_forward": forward, "eval_logme_metric": with_metric, "eval_logme": with_logme}


def _stats(times):
    q = np.percentile(times, [25, 50, 75])
    return {"median_s": float(q[1]), "q25_s": float(q[0]), "q75_s": float(q[2]), "repeats": len(times)}


def run(sizes: dict, repeats: int) -> list[dict]:
    b, s = sizes["batch"], sizes["image"]
    key = jax.random.key(0)
    kx, ky, kax, kay = jax.random.split(key, 4)
    x = jax.random.uniform(kx, (b, s, s))
    y = jax.random.randint(ky, (b,), 0, 2)
    aux_x = jax.random.uniform(kax, (b, s, s))
    aux_y = jax.random.randint(kay, (b,), 0, TARGET_CLASSES)
    graphdef, state = nnx.split(CNN(2, seed=0))
    tx = optax.adam(2e-3)
    opt_state = tx.init(state)
    metric = metrics.logme(64, num_target_classes=TARGET_CLASSES)
    metric_graphdef, metric_state = nnx.split(metric)

    programs = {}  # name -> (compiled, args, compile seconds)
    for name, fn in make_train_steps(graphdef, tx).items():
        args = (state, opt_state, x, y, aux_x, aux_y)
        exe, compile_s = compile_timed(fn, *args)
        programs[name] = (exe, args, compile_s)
    for name, fn in make_eval_steps(graphdef, metric_graphdef).items():
        args = (state, metric_state, aux_x, aux_y)
        exe, compile_s = compile_timed(fn, *args)
        programs[name] = (exe, args, compile_s)
    filled = programs["eval_logme_metric"][0](*programs["eval_logme_metric"][1])

    def finalize(metric_state):
        return nnx.merge(metric_graphdef, metric_state).compute()

    exe, compile_s = compile_timed(finalize, filled)
    programs["logme_metric_compute"] = (exe, (filled,), compile_s)

    times = {name: [] for name in programs}
    for exe, args, _ in programs.values():  # warm-up
        jax.block_until_ready(exe(*args))
    for _ in range(repeats):
        for name, (exe, args, _) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(exe(*args))
            times[name].append(time.perf_counter() - start)

    # the metric's score equals the whole-array LogME of the same batch (float32)
    metric_score = float(programs["logme_metric_compute"][0](filled))
    whole = float(programs["eval_logme"][0](*programs["eval_logme"][1]))
    results = []
    for name, (_, _, compile_s) in programs.items():
        base = "plain" if not name.startswith(("eval", "logme")) else "eval_forward"
        row = {"case": name, "sizes": sizes, "compile_s": compile_s, "time": _stats(times[name])}
        row["ratio_to"] = base
        row["ratio"] = row["time"]["median_s"] / float(np.median(times[base]))
        results.append(row)
    results.append({"case": "metric_vs_whole_array", "abs_diff": abs(metric_score - whole), "logme": whole})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 21; tiny 3)")
    parser.add_argument(
        "--out", default="jaxtransfer-output/bench/training_step.json", help="JSON report path"
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else SIZES
    repeats = args.repeats or (3 if args.tiny else 21)
    results = run(sizes, repeats)
    out = report(results, args.tiny, {"repeats": repeats, "sizes": sizes, "seed": 0})
    write_report(out, args.out)
    print(f"{out['device']} jax {out['jax']} ({out['dtype']}), batch {sizes['batch']}, {repeats} rounds")
    for row in results:
        if "time" in row:
            t = row["time"]
            print(
                f"{row['case']:22s} {t['median_s'] * 1e3:9.3f} ms (IQR {t['q25_s'] * 1e3:.3f}-"
                f"{t['q75_s'] * 1e3:.3f})  {row['ratio']:5.2f}x {row['ratio_to']}  "
                f"(compile {row['compile_s']:.1f} s)"
            )
        else:
            diff, score = row["abs_diff"], row["logme"]
            print(f"metric LogME vs whole-array LogME: |diff| {diff:.2e} (LogME {score:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
