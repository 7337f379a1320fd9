"""Bad inputs raise the right exception with words that name the problem; inputs are never mutated."""

import numpy as np
import pytest

import jaxtransfer as jt

N = 12


@pytest.fixture
def labels(rng):
    return rng.integers(0, 3, N), rng.integers(0, 4, N)


@pytest.fixture
def probs(rng):
    p = rng.random((N, 3)) + 0.1
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture
def regression(rng):
    return rng.normal(size=(N, 3)), rng.normal(size=(N, 2))


# ----------------------------------------------------------------------------- labels


def test_float_labels_are_a_type_error(labels):
    z, y = labels
    with pytest.raises(TypeError, match="source_labels must hold integer class labels, got dtype float"):
        jt.nce(z.astype(float), y)
    with pytest.raises(TypeError, match="targets must hold integer class labels"):
        jt.conditional_entropy(z, y.astype(np.float32))
    with pytest.raises(TypeError, match="targets must hold integer class labels"):
        jt.hardness(y + 0.5)
    with pytest.raises(TypeError, match="targets must hold integer class labels"):
        jt.leep(np.full((N, 2), 0.5), y.astype(float))


def test_probabilities_passed_as_labels_get_a_hint(probs, labels):
    with pytest.raises(TypeError, match="pass probabilities or logits to an estimator that takes them"):
        jt.nce(probs, labels[1])


def test_two_dimensional_labels_are_a_shape_error(labels):
    z, y = labels
    with pytest.raises(ValueError, match=r"source_labels must have shape \[n\], got shape \(6, 2\)"):
        jt.nce(z.reshape(6, 2), y.reshape(6, 2))
    with pytest.raises(ValueError, match=r"targets must have shape \[n\], got shape \(12, 1\)"):
        jt.nce(z, y[:, None])
    with pytest.raises(ValueError, match=r"targets must have shape \[n\], got shape \(12, 1\)"):
        jt.leep(np.full((N, 2), 0.5), y[:, None])
    with pytest.raises(ValueError, match=r"targets must have shape \[S/T, n\], got shape \(2, 3, 2\)"):
        jt.hardness(y.reshape(2, 3, 2))
    with pytest.raises(ValueError, match=r"source_labels must have shape \[n\], got shape \(\)"):
        jt.nce(z[0], y[0])


def test_negative_label_names_the_argument(labels):
    z, y = labels
    bad = y.copy()
    bad[3] = -2
    with pytest.raises(ValueError, match="targets contains the negative label -2"):
        jt.nce(z, bad)
    with pytest.raises(ValueError, match="source_labels contains the negative label -2"):
        jt.nce(bad, z)
    with pytest.raises(ValueError, match="targets contains the negative label -2"):
        jt.hardness(bad)
    with pytest.raises(ValueError, match="targets contains the negative label -2"):
        jt.leep(np.full((N, 2), 0.5), bad)


def test_label_at_or_above_class_count_names_the_argument(labels):
    z, y = labels
    z[0], y[0] = 2, 3  # the largest labels present
    with pytest.raises(ValueError, match=r"source_labels contains the label 2, but num_source_classes=2"):
        jt.nce(z, y, num_source_classes=2)
    with pytest.raises(ValueError, match=r"targets contains the label 3, but num_target_classes=3"):
        jt.conditional_entropy(z, y, num_target_classes=3)
    with pytest.raises(ValueError, match=r"targets contains the label 3, but num_target_classes=2"):
        jt.hardness(y, num_target_classes=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        jt.leep(np.full((N, 2), 0.5), y, num_target_classes=3)


@pytest.mark.parametrize("bad", [0, -1])
def test_class_count_must_be_positive(labels, bad):
    with pytest.raises(ValueError, match=f"num_source_classes must be at least 1, got {bad}"):
        jt.nce(*labels, num_source_classes=bad)


@pytest.mark.parametrize("bad", [3.0, "3", True, np.array(3)])
def test_class_count_must_be_a_python_int(labels, bad):
    with pytest.raises(TypeError, match="num_target_classes must be a Python int"):
        jt.nce(*labels, num_target_classes=bad)


def test_unknown_histogram_method(labels):
    with pytest.raises(ValueError, match="method must be one of 'auto', 'onehot', 'scatter', got 'dense'"):
        jt.nce(*labels, method="dense")


# ----------------------------------------------------------------------------- real-valued inputs


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values(regression, probs, labels, value):
    f, y = regression
    bad_f, bad_y = f.copy(), y.copy()
    bad_f[4, 1] = value
    bad_y[7, 0] = value
    with pytest.raises(ValueError, match=r"features contains a non-finite value .* at index \(4, 1\)"):
        jt.linear_mse(bad_f, y)
    with pytest.raises(ValueError, match=r"targets contains a non-finite value .* at index \(7, 0\)"):
        jt.linear_mse(f, bad_y)
    with pytest.raises(ValueError, match="source_predictions contains a non-finite value"):
        jt.label_mse(bad_f[:, 1], y)
    bad_p = probs.copy()
    bad_p[2, 2] = value
    with pytest.raises(ValueError, match="source_probs contains a non-finite value"):
        jt.leep(bad_p, labels[1])
    with pytest.raises(ValueError, match="source_probs contains a non-finite value"):
        jt.leep(bad_p, labels[1], logits=True)
    with pytest.raises(ValueError, match="features contains a non-finite value"):
        jt.score_matrix("linear_mse", np.stack([f, bad_f]), y[None])


def test_feature_shapes(regression, labels):
    f, y = regression
    with pytest.raises(ValueError, match=r"features must have shape \[n, d\], got shape \(12,\)"):
        jt.linear_mse(f[:, 0], y)
    with pytest.raises(
        ValueError, match=r"targets must have shape \[n, k\] or \[n\], got shape \(12, 2, 1\)"
    ):
        jt.linear_mse(f, y[:, :, None])
    with pytest.raises(ValueError, match=r"source_predictions must have shape \[n, d\] or \[n\]"):
        jt.label_mse(f[:, :, None], y)
    with pytest.raises(ValueError, match=r"source_probs must have shape \[n, Cz\], got shape \(12,\)"):
        jt.leep(np.full(N, 1.0), labels[1])
    with pytest.raises(ValueError, match="features has no columns"):
        jt.linear_mse(np.zeros((N, 0)), y)


@pytest.mark.parametrize("bad", [np.array([1 + 2j, 3 + 0j]), np.array(["a", "b"]), "abc", None, {"a": 1}])
def test_non_numeric_features_are_a_type_error(bad):
    with pytest.raises(TypeError, match="features must be"):
        jt.linear_mse(bad, np.zeros(2))


def test_ragged_input_is_a_type_error():
    with pytest.raises(TypeError, match="source_labels must be an array"):
        jt.nce([[0, 1], [1]], [0, 1])


def test_bad_probabilities_mention_logits(rng, labels):
    logits = rng.normal(size=(N, 3))
    with pytest.raises(ValueError, match=r"source_probs must hold probabilities.*pass logits=True"):
        jt.leep(logits, labels[1])
    with pytest.raises(ValueError, match=r"source_probs rows must sum to 1.*pass logits=True"):
        jt.leep(np.full((N, 3), 0.5), labels[1])


def test_logits_flag_must_be_bool(probs, labels):
    with pytest.raises(TypeError, match="logits must be True or False"):
        jt.leep(probs, labels[1], logits="yes")


# ----------------------------------------------------------------------------- sample counts


def test_fewer_than_two_samples(regression, probs):
    f, y = regression
    with pytest.raises(ValueError, match="source_labels needs at least 2 samples, got 1"):
        jt.nce([0], [0])
    with pytest.raises(ValueError, match="targets needs at least 2 samples, got 1"):
        jt.hardness(np.array([1]))
    with pytest.raises(ValueError, match="features needs at least 2 samples, got 1"):
        jt.linear_mse(f[:1], y[:1])
    with pytest.raises(ValueError, match="source_probs needs at least 2 samples, got 1"):
        jt.leep(probs[:1], [0])
    with pytest.raises(ValueError, match="features needs at least 2 samples, got 0"):
        jt.linear_mse(f[:0], y[:0])


def test_mask_keeping_fewer_than_two_samples(labels, regression):
    keep_one = np.zeros(N, bool)
    keep_one[5] = True
    with pytest.raises(ValueError, match=r"mask keeps 1 sample\(s\).*at least 2 are needed"):
        jt.nce(*labels, mask=keep_one)
    with pytest.raises(ValueError, match=r"mask keeps 0 sample\(s\)"):
        jt.linear_mse(*regression, mask=np.zeros(N, bool))
    sources = np.stack([labels[0]] * 2)
    source_mask = np.ones((2, N), bool)
    source_mask[1] = keep_one
    with pytest.raises(ValueError, match=r"source_mask keeps 1 sample\(s\)"):
        jt.score_matrix("nce", sources, labels[1][None], source_mask=source_mask)


def test_mismatched_sample_counts_name_both_arguments(labels, probs, regression):
    z, y = labels
    f, t = regression
    with pytest.raises(ValueError, match="source_labels has 12 samples but targets has 11"):
        jt.nce(z, y[:11])
    with pytest.raises(ValueError, match="source_probs has 11 samples but targets has 12"):
        jt.leep(probs[:11], y)
    with pytest.raises(ValueError, match="features has 12 samples but targets has 10"):
        jt.linear_mse(f, t[:10])
    with pytest.raises(ValueError, match="source_predictions has 9 samples but targets has 12"):
        jt.label_mse(f[:9, 0], t)
    with pytest.raises(ValueError, match="source_labels has 12 samples but targets has 11"):
        jt.score_matrix("nce", z[None], y[None, :11])


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("l2", [-1.0, -1e-9, np.array([0.5, -0.5]), np.nan, np.inf, [0.1, np.nan]])
def test_bad_l2_values(regression, l2):
    with pytest.raises(ValueError, match="l2 must be finite and >= 0"):
        jt.linear_mse(*regression, l2=l2)
    with pytest.raises(ValueError, match="l2 must be finite and >= 0"):
        jt.label_mse(regression[0][:, 0], regression[1], l2=l2)


def test_bad_l2_shapes_and_types(regression):
    with pytest.raises(ValueError, match=r"l2 must be a scalar or a 1-D array, got shape \(2, 2\)"):
        jt.linear_mse(*regression, l2=np.ones((2, 2)))
    with pytest.raises(ValueError, match="l2 is empty"):
        jt.linear_mse(*regression, l2=np.array([]))
    with pytest.raises(TypeError, match="l2 must be a number or a 1-D array of numbers"):
        jt.linear_mse(*regression, l2="1.0")
    # l2=None is the default (1.0, the paper's λ) unless l2_relative is given instead
    assert float(jt.linear_mse(*regression, l2=None)) == float(jt.linear_mse(*regression, l2=1.0))
    with pytest.raises(TypeError, match="l2_relative must be a number or a 1-D array of numbers"):
        jt.linear_mse(*regression, l2_relative="0.1")


def test_unknown_option(labels, regression, probs):
    z, y = labels
    with pytest.raises(TypeError, match="nce got unexpected option"):
        jt.score_matrix("nce", z[None], y[None], l2=1.0)
    with pytest.raises(
        TypeError, match=r"linear_mse got unexpected option\(s\) num_target_classes; it accepts l2"
    ):
        jt.score_matrix("linear_mse", regression[0][None], regression[1][None], num_target_classes=3)
    with pytest.raises(TypeError, match="leep got unexpected option"):
        jt.score_matrix(jt.leep, probs[None], y[None], l2=1.0)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        jt.nce(z, y, l2=1.0)


def test_unknown_estimator_lists_the_names(labels):
    with pytest.raises(ValueError, match="unknown estimator 'logme_typo'") as err:
        jt.score_matrix("logme_typo", labels[0][None], labels[1][None])
    for name in jt.available_estimators():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="unknown estimator 'NCE'; expected one of"):
        jt.get_estimator("NCE")


def test_non_estimator_callable_is_a_type_error(labels):
    with pytest.raises(
        TypeError, match="estimator must be a jaxtransfer estimator or its name, got function"
    ):
        jt.score_matrix(lambda a, b: 0.0, labels[0][None], labels[1][None])
    with pytest.raises(TypeError, match="got int"):
        jt.get_estimator(3)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "2"])
def test_bad_batch_size(labels, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        jt.score_matrix("nce", labels[0][None], labels[1][None], batch_size=batch_size)


# ----------------------------------------------------------------------------- masks


def test_wrong_mask_shapes(labels, regression):
    z, y = labels
    sources, targets = np.stack([z, z, z]), np.stack([y, y])
    with pytest.raises(ValueError, match=r"mask must have shape \[12\], got shape \[11\]"):
        jt.nce(z, y, mask=np.ones(N - 1, bool))
    with pytest.raises(ValueError, match=r"mask must have shape \[12\], got shape \[1, 12\]"):
        jt.linear_mse(*regression, mask=np.ones((1, N), bool))
    with pytest.raises(ValueError, match=r"mask must have shape \[2, 12\], got shape \[12\]"):
        jt.hardness(targets, mask=np.ones(N, bool))
    with pytest.raises(ValueError, match=r"source_mask must have shape \[3, 12\], got shape \[2, 12\]"):
        jt.score_matrix("nce", sources, targets, source_mask=np.ones((2, N), bool))
    with pytest.raises(ValueError, match=r"target_mask must have shape \[2, 12\], got shape \[12\]"):
        jt.score_matrix("nce", sources, targets, target_mask=np.ones(N, bool))
    with pytest.raises(ValueError, match=r"mask must have shape \[12\], got shape \[3, 12\]"):
        jt.score_matrix("nce", sources, targets, mask=np.ones((3, N), bool))


def test_mask_values_and_dtype(labels):
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        jt.nce(*labels, mask=np.ones(N))
    with pytest.raises(ValueError, match="mask must hold only 0/1 or True/False values"):
        jt.nce(*labels, mask=np.full(N, 2))


def test_score_matrix_needs_stacked_inputs(labels, regression):
    z, y = labels
    with pytest.raises(ValueError, match=r"source_labels must have shape \[S/T, n\], got shape \(12,\)"):
        jt.score_matrix("nce", z, y[None])
    with pytest.raises(ValueError, match=r"features must have shape \[S/T, n, d\], got shape \(12, 3\)"):
        jt.score_matrix("linear_mse", regression[0], regression[1][None])


# ----------------------------------------------------------------------------- no mutation


def test_inputs_are_not_mutated(rng):
    z = rng.integers(0, 3, N).astype(np.int32)  # int32: the label conversion could alias it
    y = rng.integers(0, 4, N)
    p = rng.random((N, 3)) + 0.1
    p /= p.sum(axis=1, keepdims=True)
    logits = rng.normal(size=(N, 3)).astype(np.float32)
    f = rng.normal(size=(N, 3)).astype(np.float32)
    t = rng.normal(size=(N, 2))
    mask = rng.random(N) < 0.8
    mask[:4] = True
    sources, targets = np.stack([f, 2 * f]), np.stack([t, -t, t])
    l2 = np.array([0.0, 0.5])
    inputs = [z, y, p, logits, f, t, mask, sources, targets, l2]
    copies = [a.copy() for a in inputs]

    jt.nce(z, y, mask=mask)
    jt.conditional_entropy(z, y, method="scatter")
    jt.hardness(y, mask=mask)
    jt.leep(p, y, mask=mask)
    jt.leep(logits, y, logits=True)
    jt.linear_mse(f, t, l2=l2, mask=mask)
    jt.label_mse(f[:, 0], t, mask=mask)
    jt.score_matrix("linear_mse", sources, targets, l2=l2, mask=mask)
    jt.score_matrix("nce", np.stack([z, z]), np.stack([y]), source_mask=np.stack([mask, mask]))

    for a, c in zip(inputs, copies, strict=True):
        assert a.dtype == c.dtype and a.shape == c.shape
        np.testing.assert_array_equal(a, c)
        assert a.flags.writeable
