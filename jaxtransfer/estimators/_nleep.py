"""NLEEP: LEEP on the posteriors of a Gaussian mixture fitted to the features (Li et al., CVPR 2021)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtransfer_kernels import matmul, sample_weights

from ._base import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._checks import as_features, as_labels, check_cells, check_same_samples, static_int, take_options
from ._leep import leep_from_probabilities
from ._pca import explained_variance_arg, num_components_arg, pca

__all__ = ["nleep"]

_REFERENCE = (
    "Y. Li, X. Jia, R. Sang, Y. Zhu, B. Green, L. Wang, B. Gong. Ranking Neural Checkpoints. CVPR 2021."
)
CLUSTERS_PER_CLASS = 5
"""Default mixture size per target class (the paper's 5 × C)."""
_DEFAULTS = {
    "key": None,
    "num_components": None,
    "explained_variance": 0.8,
    "num_clusters": None,
    "num_iter": 100,
    "num_target_classes": None,
}


def _key_arg(key):
    if key is None:
        raise TypeError("nleep needs key=<PRNG key>, e.g. key=jax.random.key(0)")
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim != 0:
            raise ValueError(f"key must be a single PRNG key, got an array of keys of shape {key.shape}")
        return key
    arr = jnp.asarray(key) if isinstance(key, (jax.Array, np.ndarray)) else None
    if arr is None or arr.dtype != jnp.uint32 or arr.shape != (2,):
        got = f"dtype {arr.dtype}, shape {arr.shape}" if arr is not None else type(key).__name__
        raise TypeError(
            f"key must be a PRNG key (jax.random.key(0), or a raw uint32[2] jax.random.PRNGKey), got {got}"
        )
    return arr


def _check(source, target, options, lead) -> Checked:
    opts = take_options("nleep", options, _DEFAULTS)
    key = _key_arg(opts["key"])
    f = as_features("features", source, lead=lead)
    y, cy = as_labels(
        "targets", target, num_classes=opts["num_target_classes"], class_arg="num_target_classes", lead=lead
    )
    check_same_samples("features", f.shape[-2], "targets", y.shape[-1])
    k = num_components_arg(opts["num_components"], f.shape[-1])
    clusters = opts["num_clusters"]
    clusters = CLUSTERS_PER_CLASS * cy if clusters is None else static_int("num_clusters", clusters, 1)
    n = f.shape[-2]
    check_cells(f"nleep's posteriors ({n} samples × {clusters} mixture components)", n * clusters)
    static = {
        "num_components": k,
        "num_clusters": clusters,
        "num_iter": static_int("num_iter", opts["num_iter"], 0),
        "num_target_classes": cy,
    }
    dynamic = {"key": key, "explained_variance": explained_variance_arg(opts["explained_variance"], f.dtype)}
    return Checked(f, y, y.shape[-1], static, dynamic)


KMEANS_ITER = 10
"""Lloyd iterations of the k-means that starts the EM (after k-means++ seeding)."""


def _row_noise(key, rank) -> jax.Array:
    """Gumbel variates [n] from ``fold_in(key, rank)``: a row's variate depends on its rank among
    the kept rows only (a mask draws what dropping the rows would), in float32 whatever the
    precision mode (x64 on or off draws the same)."""
    return jax.vmap(lambda r: jax.random.gumbel(jax.random.fold_in(key, r), (), jnp.float32))(rank)


def _seed_indices(key, z, mask, num_clusters: int) -> jax.Array:
    """k-means++ seeds: ``num_clusters`` kept rows, each drawn with probability ∝ D².

    D²(i) is the squared distance from row i to the nearest seed drawn so
    far (Arthur & Vassilvitskii, SODA 2007); the first seed is uniform. Draws
    use the Gumbel-max trick with :func:`_row_noise` of ``fold_in(key, j)``
    for seed j. Once every distinct kept row is a seed (D² = 0 everywhere),
    the remaining seeds are uniform over the kept rows (duplicate seeds give
    duplicate components, which stay identical). Distances are taken in
    float32, so the same key picks the same rows with x64 on or off.
    """
    n = z.shape[0]
    kept = sample_weights(n, mask, bool)
    rank = jnp.cumsum(kept.astype(jnp.int32)) - 1
    zf = jnp.asarray(z, jnp.float32)

    def draw(j, d2):
        spread = jnp.any(kept & (d2 > 0))
        log_d2 = jnp.where(kept & (d2 > 0), jnp.log(jnp.where(d2 > 0, d2, 1)), -jnp.inf)
        logits = jnp.where(spread, log_d2, jnp.where(kept, 0, -jnp.inf))
        return jnp.argmax(logits + _row_noise(jax.random.fold_in(key, j), rank)).astype(jnp.int32)

    def distance(i):
        return jnp.sum((zf - zf[i][None, :]) ** 2, axis=1)

    def step(j, carry):
        idx, d2 = carry
        i = draw(j, d2)
        return idx.at[j].set(i), jnp.minimum(d2, distance(i))

    first = draw(0, jnp.zeros((n,), jnp.float32))  # no spread yet: uniform over the kept rows
    init = (jnp.zeros((num_clusters,), jnp.int32).at[0].set(first), distance(first))
    idx, _ = lax.fori_loop(1, num_clusters, step, init)
    return idx


def _nearest(z, means):
    """Index of the nearest mean for every row [n] (expanded squares: three matmuls)."""
    d2 = jnp.sum(z * z, axis=1)[:, None] - 2 * matmul(z, means.T) + jnp.sum(means * means, axis=1)[None, :]
    return jnp.argmin(d2, axis=1)


def _init(z, variances, floor, count, key, mask, num_clusters):
    """Initial mixture from k-means, as scikit-learn's ``GaussianMixture(init_params="kmeans")``.

    k-means++ seeds (:func:`_seed_indices`), ``KMEANS_ITER`` Lloyd
    iterations, then the M-step of the hard assignment: each component's
    mean, variance (floored) and weight are those of its cluster; an empty
    cluster keeps its seed, the overall variance and weight 0.
    """
    w = sample_weights(z.shape[0], mask, z.dtype)
    seeds = jnp.take(z, _seed_indices(key, z, mask, num_clusters), axis=0)
    var = jnp.broadcast_to(jnp.maximum(variances, floor)[None, :], seeds.shape)
    log_weights = jnp.full((num_clusters,), -math.log(num_clusters), z.dtype)

    def lloyd(_, params):
        hard = jax.nn.one_hot(_nearest(z, params[0]), num_clusters, dtype=z.dtype)
        return _m_step(z, w, hard, params, floor, count)

    params = lax.fori_loop(0, KMEANS_ITER, lloyd, (seeds, var, log_weights))
    hard = jax.nn.one_hot(_nearest(z, params[0]), num_clusters, dtype=z.dtype)
    return _m_step(z, w, hard, params, floor, count)


def _log_joint(z, means, var, log_weights):
    """log π_k + log N(zᵢ; μ_k, diag(σ_k²)), [n, K], by the expanded square (three matmuls)."""
    prec = 1 / var  # [K, k]
    quad = (
        matmul(z * z, prec.T)
        - 2 * matmul(z, (means * prec).T)
        + jnp.sum(means * means * prec, axis=1)[None, :]
    )
    log_norm = -0.5 * (z.shape[1] * math.log(2 * math.pi) + jnp.sum(jnp.log(var), axis=1))
    return (log_weights + log_norm)[None, :] - 0.5 * quad


def _posteriors(z, params):
    """E-step in the log domain: responsibilities [n, K] (rows sum to 1)."""
    lj = _log_joint(z, *params)
    return jnp.exp(lj - jax.nn.logsumexp(lj, axis=1, keepdims=True))


def _m_step(z, w, resp, params, floor, count):
    means_old, var_old, _ = params
    r = resp * w[:, None]
    nk = jnp.sum(r, axis=0)  # [K]
    alive = nk > 0
    safe = jnp.where(alive, nk, 1)[:, None]
    means = matmul(r.T, z) / safe
    var = jnp.maximum(matmul(r.T, z * z) / safe - means * means, floor)
    means = jnp.where(alive[:, None], means, means_old)
    var = jnp.where(alive[:, None], var, var_old)
    log_weights = jnp.where(alive, jnp.log(jnp.where(alive, nk, 1) / count), -jnp.inf)
    return means, var, log_weights


def _fit(z, variances, floor, count, key, mask, *, num_clusters: int, num_iter: int):
    """EM for a diagonal Gaussian mixture: ``num_iter`` steps from :func:`_init`; returns the parameters."""
    w = sample_weights(z.shape[0], mask, z.dtype)
    params = _init(z, variances, floor, count, key, mask, num_clusters)

    def step(_, params):
        return _m_step(z, w, _posteriors(z, params), params, floor, count)

    return lax.fori_loop(0, num_iter, step, params)


def _prepare(features, mask, *, key, num_components, explained_variance, num_clusters, num_iter, **_):
    """Source-only work: PCA, EM, and the mixture's posteriors θ [n, K]."""
    p = pca(features, mask, num_components=num_components, explained_variance=explained_variance)
    params = _fit(
        p.scores, p.variances, p.floor, p.count, key, mask, num_clusters=num_clusters, num_iter=num_iter
    )
    return _posteriors(p.scores, params)


def _finish(theta, y, mask, *, num_target_classes, **_):
    return leep_from_probabilities(theta, y, mask, num_target_classes=num_target_classes)


@register(
    EstimatorInfo(
        name="nleep",
        task="classification",
        source="features",
        target="labels",
        orientation="higher_is_better",
        reference=_REFERENCE,
        check=_check,
        prepare=_prepare,
        finish=_finish,
        default_batch=one_source_per_step,
    )
)
def nleep(
    features,
    targets,
    *,
    key,
    num_components=None,
    explained_variance=0.8,
    num_clusters=None,
    num_iter=100,
    num_target_classes=None,
    mask=None,
) -> jax.Array:
    """NLEEP: LEEP with a Gaussian mixture on the features in place of the source classifier.

    The features are reduced by PCA; a mixture of K Gaussians with diagonal
    covariances is fitted by EM; its posteriors θ_k(xᵢ) = p(k | zᵢ) play the
    source model's softmax output in LEEP:

    .. math::
        \\hat P(y, k) = \\frac1n \\sum_{i: y_i = y} \\theta_k(x_i), \\quad
        \\mathrm{NLEEP} = \\frac1n \\sum_i \\log \\sum_k \\hat P(y_i | k)\\, \\theta_k(x_i).

    NLEEP ≤ 0; higher is better. The LEEP step is :func:`jaxtransfer.leep`'s own.

    EM starts from k-means, as scikit-learn's ``GaussianMixture`` does: K
    k-means++ seeds drawn with ``key`` (each kept row with probability ∝ its
    squared distance to the seeds so far), ``KMEANS_ITER`` = 10 Lloyd
    iterations, and each component's mean, variance and weight from its
    cluster. Then ``num_iter`` iterations (a fixed count, ``lax.fori_loop``)
    of a log-domain E-step (``logsumexp``) and the M-step
    μ_k = Σ r_ik zᵢ / N_k, σ²_k = Σ r_ik zᵢ² / N_k − μ_k², π_k = N_k / n. A
    component that loses all its mass keeps its parameters and gets weight
    0. (Seeding at random rows with the overall variance, as before, left
    components straddling classes on perfectly separable features: −0.09 to
    −1.4 where the answer is 0.)

    Args:
      features: float [n, d], the source model's features on the target inputs.
      targets: int [n], target labels in ``[0, num_target_classes)``.
      key: a PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``),
        required. The same key gives bitwise the same score.
      num_components: static cap k on the principal components; default
        min(d, 64); values above d mean d.
      explained_variance: keep the leading components (at most k) explaining
        this fraction of the variance (default 0.8, as in the reference
        implementation of Pándy et al., 2022); ``None`` keeps all k. The
        others become zero columns, which change no posterior.
      num_clusters: static mixture size K; default 5 × num_target_classes
        (the paper's choice). Under ``score_matrix`` it is 5 × the common
        class count of all targets.
      num_iter: static number of EM iterations (default 100, scikit-learn's
        ``max_iter``); 0 gives the posteriors of the initial mixture.
      num_target_classes: static class count; inferred on eager calls.
      mask: optional bool [n]; False leaves a sample out of the PCA, the EM
        (including the initial draw) and LEEP — the same as dropping it.

    Returns:
      Scalar NLEEP in the dtype of ``features``.

    Raises:
      ValueError: wrong shapes, fewer than 2 samples, non-finite features,
        labels out of range, mismatched sample counts, counts < 1,
        explained_variance outside (0, 1].
      TypeError: a missing or malformed key, non-numeric features,
        non-integer labels, non-int static counts, unknown options.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from jaxtransfer import nleep
      >>> f = np.array([[0.0, 0.0], [0.1, 0.2], [0.2, 0.1], [5.0, 5.0], [5.1, 5.2], [5.2, 5.1]])
      >>> y = np.array([0, 0, 0, 1, 1, 1])
      >>> score = nleep(f, y, key=jax.random.key(0))  # 10 clusters, each within one class
      >>> round(abs(float(score)), 4)  # the posteriors determine y: NLEEP = 0
      0.0

    References:
      Li, Jia, Sang, Zhu, Green, Wang, Gong, "Ranking Neural Checkpoints",
      CVPR 2021. Their code fits scikit-learn's ``GaussianMixture`` (full
      covariances, k-means initialisation, tolerance stopping) on the CPU;
      this is a diagonal mixture in JAX, initialised the same way and seeded
      by ``key``. Arthur & Vassilvitskii, "k-means++: the advantages of
      careful seeding", SODA 2007.

    Notes:
      Variances are floored at 1e-6 times the largest principal variance, so
      the score is unchanged by rescaling or rotating the features and by
      zero-padded feature columns. The E-step and M-step expand the squares
      (Σz² − 2zμ + μ², three matmuls per iteration, as scikit-learn does):
      in float32 a component far from the centre relative to its width,
      |μ|/σ ≳ 10³, loses relative accuracy in its variance. Cost
      O(num_iter · n · K · k) per source; ``score_matrix`` fits the mixture
      once per source and shares it across targets. Different keys give
      different local optima, usually with close scores.
    """
    opts = {
        "key": key,
        "num_components": num_components,
        "explained_variance": explained_variance,
        "num_clusters": num_clusters,
        "num_iter": num_iter,
        "num_target_classes": num_target_classes,
    }
    return run_pair(nleep.info, features, targets, mask, opts)
