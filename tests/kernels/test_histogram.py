"""Label histograms against np.add.at / np.histogram2d / np.bincount references."""

import jax
import jax.numpy as jnp
import jaxtransfer_kernels as K
import numpy as np
import pytest

# soft histogram: float32 sums of n probabilities against float64
SOFT_TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-5}}

# (num_z, num_y): single class on either or both sides, binary, 10-class, large
CLASS_COUNTS = [(1, 1), (1, 4), (5, 1), (2, 2), (10, 10), (3, 10), (300, 50)]
# every class-count case by both algorithms; "auto" (a separate compile) on one of each side
CASES = [(cz, cy, m) for cz, cy in CLASS_COUNTS for m in ("onehot", "scatter")] + [
    (10, 10, "auto"),
    (300, 50, "auto"),
]


def joint_ref(z, y, num_z, num_y, weights=None):
    """Joint counts by np.add.at in int64."""
    out = np.zeros((num_z, num_y), np.int64)
    w = np.ones(len(z), np.int64) if weights is None else np.asarray(weights, np.int64)
    np.add.at(out, (np.asarray(z, np.int64), np.asarray(y, np.int64)), w)
    return out


def labels(rng, num_classes, shape, absent=()):
    """Random labels in [0, num_classes) avoiding the classes in ``absent``."""
    allowed = np.setdiff1d(np.arange(num_classes), absent)
    return rng.choice(allowed, size=shape).astype(np.int32)


def assert_counts(got, want):
    got = np.asarray(got)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- joint_histogram


def test_joint_histogram_hand_worked():
    z = np.array([0, 0, 1, 2, 2, 2])
    y = np.array([1, 1, 0, 0, 1, 1])
    mask = np.array([True, False, True, True, True, True])
    want = np.array([[0, 2], [1, 0], [1, 2]])
    want_masked = np.array([[0, 1], [1, 0], [1, 2]])
    assert_counts(K.joint_histogram(z, y, num_z=3, num_y=2, method="auto"), want)
    for method in ("onehot", "scatter"):
        assert_counts(K.joint_histogram(z, y, num_z=3, num_y=2, mask=mask, method=method), want_masked)


@pytest.mark.parametrize(("num_z", "num_y", "method"), CASES)
def test_joint_histogram_vs_histogram2d(rng, num_z, num_y, method):
    n = 257
    z = labels(rng, num_z, n)
    y = labels(rng, num_y, n)
    mask = rng.random(n) < 0.7
    edges_z = np.arange(num_z + 1) - 0.5
    edges_y = np.arange(num_y + 1) - 0.5
    want_masked, _, _ = np.histogram2d(z, y, bins=[edges_z, edges_y], weights=mask.astype(float))
    got = K.joint_histogram(z, y, num_z=num_z, num_y=num_y, mask=mask, method=method)
    assert got.shape == (num_z, num_y)
    assert_counts(got, want_masked.astype(np.int64))


@pytest.mark.parametrize("method", ["onehot", "scatter"])
def test_joint_histogram_absent_classes(rng, method):
    # classes 0, 3 (first), and 6 (last) never occur in z; 0 and 4 (last) never in y.
    n = 200
    z = labels(rng, 7, n, absent=(0, 3, 6))
    y = labels(rng, 5, n, absent=(0, 4))
    mask = rng.random(n) < 0.5
    got = np.asarray(K.joint_histogram(z, y, num_z=7, num_y=5, mask=mask, method=method))
    assert_counts(got, joint_ref(z, y, 7, 5, mask))
    assert (got[[0, 3, 6]] == 0).all() and (got[:, [0, 4]] == 0).all()


@pytest.mark.parametrize("method", ["onehot", "scatter"])
def test_joint_histogram_all_masked_and_empty_sample(rng, method):
    z = labels(rng, 4, 30)
    y = labels(rng, 3, 30)
    got = K.joint_histogram(z, y, num_z=4, num_y=3, mask=np.zeros(30, bool), method=method)
    assert_counts(got, np.zeros((4, 3), np.int64))
    got = K.joint_histogram(z[:0], y[:0], num_z=4, num_y=3, mask=np.zeros(0, bool), method=method)
    assert_counts(got, np.zeros((4, 3), np.int64))


@pytest.mark.parametrize(
    ("dtype", "method"), [(np.int8, "onehot"), (np.uint8, "onehot"), (np.uint8, "scatter")]
)
def test_joint_histogram_label_dtypes(rng, dtype, method):
    n = 100
    z = labels(rng, 6, n)
    y = labels(rng, 4, n)
    got = K.joint_histogram(z.astype(dtype), y.astype(dtype), num_z=6, num_y=4, method=method)
    assert_counts(got, joint_ref(z, y, 6, 4))


# --------------------------------------------------------------- joint_histograms


BATCHED_CASES = [
    (mask_kind, cz, cy, method)
    for method in ("onehot", "scatter")
    for mask_kind, cz, cy in [
        ("none", 10, 10),
        ("shared", 10, 10),
        ("per_row", 10, 10),
        ("per_row", 1, 3),
        ("per_row", 300, 50),
    ]
]


@pytest.mark.parametrize(("mask_kind", "num_z", "num_y", "method"), BATCHED_CASES)
def test_joint_histograms_batched_equals_looped(rng, num_z, num_y, method, mask_kind):
    s, t, n = 3, 2, 150
    zs = labels(rng, num_z, (s, n))
    ys = labels(rng, num_y, (t, n))
    if mask_kind == "none":
        sm = tm = None
        sw, tw = np.ones((s, n), bool), np.ones((t, n), bool)
    elif mask_kind == "shared":  # [n] masks broadcast over the rows
        sm, tm = rng.random(n) < 0.8, rng.random(n) < 0.7
        sw, tw = np.broadcast_to(sm, (s, n)), np.broadcast_to(tm, (t, n))
    else:  # [S, n] and [T, n] masks
        sm, tm = rng.random((s, n)) < 0.8, rng.random((t, n)) < 0.7
        sw, tw = sm, tm
    got = np.asarray(
        K.joint_histograms(zs, ys, num_z=num_z, num_y=num_y, source_mask=sm, target_mask=tm, method=method)
    )
    assert got.shape == (s, t, num_z, num_y) and got.dtype == np.int32
    for i in range(s):
        for j in range(t):
            np.testing.assert_array_equal(got[i, j], joint_ref(zs[i], ys[j], num_z, num_y, sw[i] & tw[j]))


MIXED_MASKS = [
    ("n", "T,n", "onehot"),
    ("n", "T,n", "scatter"),
    (None, "T,n", "onehot"),  # one side unmasked: its marginal is a plain count
    ("S,n", None, "onehot"),
    (None, "n", "onehot"),
    ("S,n", "n", "onehot"),
]


@pytest.mark.parametrize(("source_mask", "target_mask", "method"), MIXED_MASKS)
def test_joint_histograms_mixed_mask_shapes(rng, source_mask, target_mask, method):
    s, t, n = 2, 3, 80
    zs = labels(rng, 4, (s, n))
    ys = labels(rng, 3, (t, n))
    shapes = {None: None, "n": (n,), "S,n": (s, n), "T,n": (t, n)}
    sm = None if source_mask is None else rng.random(shapes[source_mask]) < 0.6
    tm = None if target_mask is None else rng.random(shapes[target_mask]) < 0.6
    sw = np.broadcast_to(True if sm is None else sm, (s, n))
    tw = np.broadcast_to(True if tm is None else tm, (t, n))
    got = np.asarray(
        K.joint_histograms(zs, ys, num_z=4, num_y=3, source_mask=sm, target_mask=tm, method=method)
    )
    for i in range(s):
        for j in range(t):
            np.testing.assert_array_equal(got[i, j], joint_ref(zs[i], ys[j], 4, 3, sw[i] & tw[j]))
            if source_mask == "n" and target_mask == "T,n":  # the single-pair function agrees
                single = K.joint_histogram(zs[i], ys[j], num_z=4, num_y=3, mask=sm & tm[j], method=method)
                np.testing.assert_array_equal(got[i, j], np.asarray(single))


@pytest.mark.parametrize("method", ["onehot", "scatter"])
def test_joint_histograms_jit_equals_eager_and_no_recompile(rng, method):
    s, t, n = 2, 2, 64
    args = lambda: (  # noqa: E731
        labels(rng, 5, (s, n)),
        labels(rng, 3, (t, n)),
        rng.random((s, n)) < 0.7,
        rng.random(n) < 0.9,
    )
    kw = {"num_z": 5, "num_y": 3, "method": method}

    zs, ys, sm, tm = args()
    with jax.disable_jit():
        eager = np.asarray(K.joint_histograms(zs, ys, source_mask=sm, target_mask=tm, **kw))
    jitted = np.asarray(K.joint_histograms(zs, ys, source_mask=sm, target_mask=tm, **kw))
    np.testing.assert_array_equal(jitted, eager)
    for i in range(s):
        for j in range(t):
            np.testing.assert_array_equal(jitted[i, j], joint_ref(zs[i], ys[j], 5, 3, sm[i] & tm))

    size = K.joint_histograms._cache_size()
    zs, ys, sm, tm = args()  # new values, same shapes and dtypes
    again = np.asarray(K.joint_histograms(zs, ys, source_mask=sm, target_mask=tm, **kw))
    assert K.joint_histograms._cache_size() == size
    np.testing.assert_array_equal(again[1, 0], joint_ref(zs[1], ys[0], 5, 3, sm[1] & tm))


def test_joint_histogram_traced_once_under_user_jit(rng):
    traces = []

    @jax.jit
    def f(z, y, m):
        traces.append(None)
        return K.joint_histogram(z, y, num_z=4, num_y=6, mask=m)

    for _ in range(3):
        z, y, m = labels(rng, 4, 50), labels(rng, 6, 50), rng.random(50) < 0.5
        np.testing.assert_array_equal(np.asarray(f(z, y, m)), joint_ref(z, y, 4, 6, m))
    assert len(traces) == 1


# ------------------------------------------------------------------ method choice


def test_choose_histogram_method_thresholds():
    cells = K.ONEHOT_MAX_CELLS
    assert cells == 256
    assert K.choose_histogram_method(2, cells + 1) == "onehot"  # (2-1)(257-1) = 256
    assert K.choose_histogram_method(2, cells + 2) == "scatter"
    assert K.choose_histogram_method(cells + 2, 2) == "scatter"
    assert K.choose_histogram_method(17, 17) == "onehot"  # 16·16 = 256
    assert K.choose_histogram_method(17, 18) == "scatter"  # 16·17 = 272
    assert K.choose_histogram_method(1, 100_000) == "onehot"  # 0 cells
    assert K.choose_histogram_method(10, 10) == "onehot"
    assert K.choose_histogram_method(300, 50) == "scatter"
    # explicit methods pass through whatever the sizes
    assert K.choose_histogram_method(300, 50, "onehot") == "onehot"
    assert K.choose_histogram_method(2, 2, "scatter") == "scatter"
    assert K.choose_histogram_method(2, 2, method="auto") == "onehot"


def test_bad_method_raises():
    with pytest.raises(ValueError, match=r"method must be one of .*'bogus'"):
        K.choose_histogram_method(3, 3, "bogus")
    with pytest.raises(ValueError, match="method must be one of"):
        K.joint_histogram(np.zeros(4, int), np.zeros(4, int), num_z=2, num_y=2, method="Scatter")
    with pytest.raises(ValueError, match="method must be one of"):
        K.joint_histograms(np.zeros((1, 4), int), np.zeros((1, 4), int), num_z=2, num_y=2, method="")


# ------------------------------------------------------------------- label_counts


@pytest.mark.parametrize("num_classes", [1, 2, 10, 300])
def test_label_counts_vs_bincount(rng, num_classes):
    n = 120
    x = labels(rng, num_classes, n)
    mask = rng.random(n) < 0.6
    got = K.label_counts(x, num_classes=num_classes)
    assert_counts(got, np.bincount(x, minlength=num_classes))
    got = K.label_counts(x, num_classes=num_classes, mask=mask)
    assert_counts(got, np.bincount(x, weights=mask, minlength=num_classes).astype(np.int64))


def test_label_counts_absent_classes(rng):
    x = labels(rng, 8, 60, absent=(0, 5, 7))
    got = np.asarray(K.label_counts(x, num_classes=8))
    assert_counts(got, np.bincount(x, minlength=8))
    assert (got[[0, 5, 7]] == 0).all()


@pytest.mark.parametrize("mask_shape", ["none", "shared", "per_row"])
def test_label_counts_batched(rng, mask_shape):
    b, n, c = 4, 90, 6
    x = labels(rng, c, (b, n))
    mask = {"none": None, "shared": rng.random(n) < 0.5, "per_row": rng.random((b, n)) < 0.5}[mask_shape]
    got = np.asarray(K.label_counts(x, num_classes=c, mask=mask))
    assert got.shape == (b, c) and got.dtype == np.int32
    w = np.ones((b, n), bool) if mask is None else np.broadcast_to(mask, (b, n))
    for i in range(b):
        np.testing.assert_array_equal(got[i], np.bincount(x[i], weights=w[i], minlength=c).astype(np.int64))
    # also equal to vmap over the rows
    if mask is None:
        vm = jax.vmap(lambda r: K.label_counts(r, num_classes=c))(x)
    else:
        vm = jax.vmap(lambda r, m: K.label_counts(r, num_classes=c, mask=m))(x, jnp.asarray(w))
    np.testing.assert_array_equal(np.asarray(vm), got)


# ----------------------------------------------------------- soft_joint_histogram


def soft_ref(probs, y, num_y, mask=None):
    """Explicit float64 loop: out[z, y_i] += probs[i, z] over kept samples."""
    probs = np.asarray(probs, np.float64)
    out = np.zeros((probs.shape[1], num_y))
    for i in range(probs.shape[0]):
        if mask is None or mask[i]:
            out[:, y[i]] += probs[i]
    return out


@pytest.mark.parametrize(("num_z", "num_y", "masked"), [(1, 3, True), (4, 1, False), (10, 10, True)])
def test_soft_joint_histogram_vs_loop(rng, num_z, num_y, masked):
    n = 200
    logits = rng.normal(size=(n, num_z))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    y = labels(rng, num_y, n, absent=(num_y - 1,) if num_y > 2 else ())
    mask = rng.random(n) < 0.6 if masked else None
    got = K.soft_joint_histogram(probs, y, num_y=num_y, mask=mask)
    assert got.shape == (num_z, num_y) and got.dtype == jnp.float32
    want = soft_ref(probs, y, num_y, mask)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **SOFT_TOL[np.float32])
    # total mass is the number of kept samples
    kept = n if mask is None else mask.sum()
    np.testing.assert_allclose(float(np.asarray(got, np.float64).sum()), kept, rtol=1e-5)


def test_soft_joint_histogram_one_hot_probs_equal_hard_counts(rng):
    z, y = labels(rng, 6, 90), labels(rng, 4, 90)
    mask = rng.random(90) < 0.7
    probs = np.eye(6, dtype=np.float32)[z]
    got = np.asarray(K.soft_joint_histogram(probs, y, num_y=4, mask=mask))
    np.testing.assert_array_equal(got, joint_ref(z, y, 6, 4, mask).astype(np.float32))


def test_small_label_dtypes_with_many_classes():
    # uint8 labels must not wrap the class list when there are more than 256 classes
    z = np.array([0, 1, 1], np.uint8)
    y = np.array([0, 1, 0])
    counts = np.asarray(K.label_counts(z, num_classes=257))
    expected = np.zeros(257, int)
    expected[[0, 1]] = [1, 2]
    np.testing.assert_array_equal(counts, expected)
    joint = np.asarray(K.joint_histogram(z, y, num_z=300, num_y=2, method="onehot"))
    ref = np.zeros((300, 2), int)
    np.add.at(ref, (z.astype(int), y), 1)
    np.testing.assert_array_equal(joint, ref)
