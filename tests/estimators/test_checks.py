"""The eager value checks of ``_checks``: the same verdicts and messages for NumPy and device inputs,
host checks that read large arrays a slice at a time, device checks that make no input-sized temporary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer.estimators import _checks

N = 12
AS_INPUT = [np.asarray, jnp.asarray]  # a NumPy array (checked on the host), a jax.Array (where it lives)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "shape, index",
    [
        ((5,), (4,)),
        ((N, 3), (0, 0)),
        ((N, 3), (N - 1, 2)),
        ((700, 400), (699, 399)),  # several slices of the host check: the last entry of the last one
        ((2, 600, 500), (1, 599, 499)),  # rows beyond one slice: checked row by row
        ((3, 1, 4), (2, 0, 3)),
    ],
)
def test_host_check_agrees_with_isfinite(shape, index, value):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    assert _checks._host_all_finite(x)
    assert bool(_checks._all_finite(jnp.asarray(x)))
    x[index] = value
    assert not _checks._host_all_finite(x)
    assert not bool(_checks._all_finite(jnp.asarray(x)))
    # non-contiguous views are read in place, with the same verdict as NumPy
    for view in (x.T, x[..., ::2], x[::-1]):
        assert _checks._host_all_finite(view) == bool(np.isfinite(view).all())


def test_host_check_of_empty_and_scalar_arrays():
    assert _checks._host_all_finite(np.zeros((0, 3), np.float32))
    assert _checks._host_all_finite(np.float32(1.0))
    assert not _checks._host_all_finite(np.array(np.nan))


@pytest.mark.parametrize("as_input", AS_INPUT)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_the_index_for_either_input(rng, as_input, value):
    f = rng.normal(size=(N, 3)).astype(np.float32)
    y = rng.normal(size=(N, 2)).astype(np.float32)
    f[5, 2] = value
    with pytest.raises(ValueError, match=r"features contains a non-finite value \(.*\) at index \(5, 2\)"):
        jt.linear_mse(as_input(f), as_input(y))
    targets = np.ones((2, N, 1), np.float32)
    targets[0, 5, 0] = value
    with pytest.raises(ValueError, match=r"targets contains a non-finite value .* at index \(1, 5, 0\)"):
        # reversed: a NumPy view with a negative stride, read in place
        jt.score_matrix("linear_mse", as_input(np.stack([y, y])), as_input(targets[::-1]))


@pytest.mark.skipif(jax.config.jax_enable_x64, reason="float64 values fit when x64 is enabled")
def test_float64_beyond_float32_range_is_non_finite_on_the_device(rng):
    """A float64 NumPy value that float32 cannot hold becomes inf on the device: refused, as before."""
    f = rng.normal(size=(N, 3))
    f[3, 1] = 1e300
    with (
        pytest.warns(RuntimeWarning, match="overflow"),
        pytest.raises(ValueError, match=r"features contains a non-finite value \(inf\) at index \(3, 1\)"),
    ):
        jt.linear_mse(f, rng.normal(size=N))


def test_checked_numpy_features_equal_their_device_copy(rng):
    f = rng.normal(size=(N, 3))  # float64: stored as the default float dtype
    out = _checks.as_features("features", f)
    assert isinstance(out, jax.Array) and out.dtype == jnp.result_type(float)
    np.testing.assert_array_equal(np.asarray(out), f.astype(out.dtype))


@pytest.mark.parametrize("as_input", AS_INPUT)
def test_label_checks_agree_for_either_input(as_input):
    labels = np.array([0, 2, 1, 3, 0, 1])
    out, classes = _checks.as_labels("targets", as_input(labels), num_classes=None, class_arg="c")
    assert classes == 4 and out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), labels)
    with pytest.raises(ValueError, match="targets contains the negative label -2; labels must be"):
        _checks.as_labels("targets", as_input(labels - 2), num_classes=None, class_arg="c")
    message = r"targets contains the label 3, but c=3; labels must lie in \[0, 3\)"
    with pytest.raises(ValueError, match=message):
        _checks.as_labels("targets", as_input(labels), num_classes=3, class_arg="c")
    # boolean labels: two classes, and messages print the label as a number
    _, classes = _checks.as_labels("targets", as_input(labels > 1), num_classes=None, class_arg="c")
    assert classes == 2
    with pytest.raises(ValueError, match=r"targets contains the label 1, but c=1"):
        _checks.as_labels("targets", as_input(labels > 1), num_classes=1, class_arg="c")


@pytest.mark.parametrize("as_input", AS_INPUT)
def test_mask_checks_agree_for_either_input(as_input):
    keep = np.array([[1, 1, 0, 1], [0, 1, 1, 0]])
    out = _checks.as_mask("source_mask", as_input(keep), (2, 4))
    assert out.dtype == bool
    np.testing.assert_array_equal(np.asarray(out), keep.astype(bool))
    assert _checks._mask_facts(as_input(keep)) == (True, 2)
    assert _checks._mask_facts(as_input(keep.astype(bool))) == (True, 2)
    with pytest.raises(ValueError, match="source_mask must hold only 0/1 or True/False values"):
        _checks.as_mask("source_mask", as_input(keep * 2), (2, 4))
    keep[1, 1] = 0
    with pytest.raises(ValueError, match=r"source_mask keeps 1 sample\(s\) of some pair"):
        _checks.as_mask("source_mask", as_input(keep), (2, 4))


@pytest.mark.parametrize("as_input", AS_INPUT)
def test_probability_rows_agree_for_either_input(rng, as_input):
    p = rng.random((N, 3)).astype(np.float32) + 0.1
    p /= p.sum(axis=1, keepdims=True)
    _checks.check_probability_rows("source_probs", as_input(p))  # passes
    bad = p.copy()
    bad[4, 1] = -0.25
    with pytest.raises(ValueError, match=r"must hold probabilities, but entry \(4, 1\) is -0.25"):
        _checks.check_probability_rows("source_probs", as_input(bad))
    bad = p.copy()
    bad[7] *= 1.5
    with pytest.raises(ValueError, match=r"source_probs rows must sum to 1, but row \(7,\) sums to 1.5"):
        _checks.check_probability_rows("source_probs", as_input(bad))


def test_device_finite_check_makes_no_input_sized_temporary():
    """The finiteness reduction reads the input once; ``any(~isfinite(x))`` made XLA on a CPU write a
    boolean array of the input's size first (0.25× a float32 input: the extra memory of score_matrix)."""
    x = jnp.ones((64, 4096), jnp.float32)
    stats = _checks._all_finite.lower(x).compile().memory_analysis()
    if stats is None:
        pytest.skip("this backend reports no memory analysis")
    assert stats.temp_size_in_bytes < x.nbytes // 16


def test_closed_over_numpy_input_inside_jit_is_checked_and_constant(rng):
    """Inside an outer jit a closed-over NumPy array is still checked now and stays a constant."""
    f = rng.normal(size=(N, 3)).astype(np.float32)
    y = rng.normal(size=(N, 1)).astype(np.float32)
    expected = jt.linear_mse(f, y)
    np.testing.assert_allclose(jax.jit(lambda: jt.linear_mse(f, y))(), expected, rtol=1e-6)
    f[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"features contains a non-finite value .* at index \(2, 0\)"):
        jax.jit(lambda: jt.linear_mse(f, y))()
