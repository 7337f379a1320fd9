"""LogME, the logarithm of maximum evidence (You et al., ICML 2021), exact for any n and d.

For a target column y ∈ ℝⁿ and features F ∈ ℝ^{n×d} (not centred, no bias,
as in the paper), the Bayesian linear model y = Fw + ε with w ~ N(0, α⁻¹I),
ε ~ N(0, β⁻¹I) has the evidence

    L(α, β) = log N(y; 0, β⁻¹Iₙ + α⁻¹FFᵀ)
            = (n/2) log β + (d/2) log α − (n/2) log 2π − (β/2)‖y − Fm‖²
              − (α/2)‖m‖² − (1/2) log|A|,     A = αI_d + βFᵀF,  m = βA⁻¹Fᵀy.

With F = U diag(σ) Vᵀ of rank r, eᵢ = σᵢ² (the nonzero eigenvalues of the
Gram matrix FᵀF, or of the kernel FFᵀ when n < d), z = Uᵀy and t = α/β,

    log|A| = Σ_{i≤r} log(α + βeᵢ) + (d − r) log α,
    (d/2) log α − (1/2) log|A| = −(1/2) Σ_{i≤r} log(1 + eᵢ/t),
    ‖m‖² = Σ eᵢzᵢ²/(t + eᵢ)²,   ‖y − Fm‖² = Σ (t/(t + eᵢ))² zᵢ² + ‖y_⊥‖²,

where y_⊥ = y − UUᵀy. The second line is the whole (d − r) log α term kept:
a zero singular value (a zero-padded feature column, or any of the d − n
directions when n < d) adds ½ log α to (d/2) log α and ½ log α to ½ log|A|,
which cancel exactly, so the score does not grow with d and is unchanged by
zero-padded columns. LogME is max L / n averaged over the target columns.

The maximum satisfies MacKay's fixed-point conditions γ = Σ eᵢ/(t + eᵢ),
α = γ/‖m‖², β = (n − γ)/‖y − Fm‖². Iterating them as assignments (the released
code) converges linearly, often slowly (over 100 steps, still 5e-5 off, on
random n = d data), and the evidence can have a second, lower local maximum
or a supremum at α/β → 0 or ∞. So, per column: a grid over u = log(α/β)
(β profiled out in closed form, β = n/(‖y − Fm‖² + t‖m‖²)) picks the basin,
then Newton's method on dℓ/du = 0 — the same conditions — safeguarded by
bisection, runs in ``lax.while_loop`` until α and β change by less than
``tol``; typically 3 to 6 steps.
"""

from __future__ import annotations

from functools import partial
from numbers import Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtransfer_kernels import Spectrum, matmul, power_of_two_scale, spectrum

from ._base import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._checks import (
    as_features,
    as_labels,
    check_cells,
    check_same_samples,
    choice,
    is_concrete,
    static_int,
    take_options,
)

__all__ = ["LogMEDetails", "logme", "logme_details"]

_REFERENCE = (
    "K. You, Y. Liu, J. Wang, M. Long. LogME: Practical Assessment of Pre-trained Models for "
    "Transfer Learning. ICML 2021."
)
_TASKS = ("classification", "regression", "multilabel")
_DEFAULTS = {"task": "classification", "num_target_classes": None, "max_iter": 100, "tol": None}


class LogMEDetails(NamedTuple):
    """LogME of one pair with the fixed point's outcome per target column.

    Attributes:
      score: [] the mean of ``evidence`` over the used columns (what
        :func:`logme` returns).
      evidence: [k] max_{α,β} log N(y; 0, β⁻¹I + α⁻¹FFᵀ) / n per column
        (NaN for an unused column).
      alpha: [k] the prior precision α at the maximum.
      beta: [k] the noise precision β at the maximum.
      iterations: [k] int32 fixed-point iterations taken.
      converged: [k] bool, the relative changes of α and β fell below ``tol``
        within ``max_iter`` iterations.
      used: [k] bool, the column is not zero on every kept sample (a zero
        column, such as a class absent from the kept samples, has unbounded
        evidence and is left out of ``score``).
      unbounded: [k] bool, the column lies in the span of the features (its
        residual is at the rounding level) and there are more samples than
        directions: the evidence grows without bound as α/β → 0, and
        ``evidence`` is its supremum, +inf (α NaN, β +inf). ``score`` is then
        +inf too.
    """

    score: jax.Array
    evidence: jax.Array
    alpha: jax.Array
    beta: jax.Array
    iterations: jax.Array
    converged: jax.Array
    used: jax.Array
    unbounded: jax.Array


# ----------------------------------------------------------------------------- validation


def _tol(value, dtype) -> jax.Array:
    """The relative tolerance; ``None`` is √eps of the features' dtype."""
    if value is None:
        return jnp.asarray(np.sqrt(np.finfo(dtype).eps), dtype)
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, (Real, jax.Array, np.ndarray)):
        raise TypeError(f"tol must be a positive number or None, got {value!r}")
    if jnp.ndim(value) != 0:
        raise ValueError(f"tol must be a scalar, got shape {jnp.shape(value)}")
    if is_concrete(value) and not (np.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"tol must be finite and > 0, got {float(value)!r}")
    return jnp.asarray(value, dtype)


def _check(source, target, options, lead) -> Checked:
    opts = take_options("logme", options, _DEFAULTS)
    task = choice("task", opts["task"], _TASKS)
    f = as_features("features", source, lead=lead)
    # multi-label and regression targets are both columns of values: one compiled program
    static = {
        "task": "classification" if task == "classification" else "regression",
        "num_target_classes": None,
    }
    if task == "classification":
        y, classes = as_labels(
            "targets",
            target,
            num_classes=opts["num_target_classes"],
            class_arg="num_target_classes",
            lead=lead,
        )
        static["num_target_classes"] = classes
        n_target = y.shape[-1]
        check_cells(f"logme's one-hot targets ({n_target} samples × {classes} classes)", n_target * classes)
    else:
        if opts["num_target_classes"] is not None:
            raise ValueError(
                f"num_target_classes applies to task='classification', not task={task!r} "
                "(whose targets are already columns)"
            )
        what = "k labels" if task == "multilabel" else "k"
        y = as_features("targets", target, lead=lead, allow_vector=True, what=what)
        if task == "multilabel" and is_concrete(y):
            host = np.asarray(y)
            bad = ~np.isin(host, (0, 1))
            if bad.any():
                where = tuple(int(i[0]) for i in np.nonzero(bad))
                raise ValueError(
                    f"targets for task='multilabel' must hold 0/1 labels, got {host[where]} at index {where}"
                )
        n_target = y.shape[-2]
    check_same_samples("features", f.shape[-2], "targets", n_target)
    dynamic = {
        "tol": _tol(opts["tol"], f.dtype),
        "max_iter": jnp.asarray(
            static_int("max_iter", opts["max_iter"], 1, "a cap on the iterations"), jnp.int32
        ),
    }
    return Checked(f, y, f.shape[-2], static, dynamic)


# ----------------------------------------------------------------------------- the two halves


def _prepare(features, mask, **_) -> Spectrum:
    """One factorisation per source, of F itself (uncentred): U and σ of the thin SVD."""
    return spectrum(features, mask, center=False)


def _columns(targets, mask, *, task, num_target_classes, dtype):
    """Target columns [n, k], masked rows zero."""
    if task == "classification":
        y = jax.nn.one_hot(targets, num_target_classes, dtype=dtype)
    else:
        y = jnp.asarray(targets, dtype)
        y = y[:, None] if y.ndim == 1 else y
    if mask is not None:
        y = y * mask.astype(dtype)[:, None]
    return y


def _projections(spec: Spectrum, y):
    """z² = (Uᵀy)² per direction [m, k] and ‖y − UUᵀy‖² [k], the latter computed directly."""
    z = matmul(spec.basis.T, y)
    resid = y - matmul(spec.basis, z)  # the second pass: never ‖y‖² − ‖z‖², which cancels in float32
    return z * z, jnp.sum(resid * resid, axis=0)


_GRID = 128  # points of the global search over log(α/β)


def _profile_terms(u, e, keep, z2, yperp2):
    """Sums that give the profile evidence and its first two derivatives in u = log(α/β).

    With t = e^u, gᵢ = eᵢ/(t + eᵢ), hᵢ = t/(t + eᵢ) (computed directly, not as 1 − g) and
    S(t) = ‖y − Fm‖² + t‖m‖² = ‖y_⊥‖² + Σ zᵢ²hᵢ, maximising over β (β = n/S) leaves
    ℓ(u) = −(n/2) log S − (1/2) Σ log(1 + eᵢ/t) up to a constant, and
    S' = Σ zᵢ²hᵢgᵢ, S'' = Σ zᵢ²hᵢgᵢ(gᵢ − hᵢ), (Σ log(1 + eᵢ/t))' = −γ, its second derivative Σ hᵢgᵢ.
    """
    t = jnp.exp(u)
    denom = t + e
    g = jnp.where(keep, e / denom, 0)
    h = jnp.where(keep, t / denom, 0)
    hg = h * g
    s0 = yperp2 + jnp.sum(z2 * h)
    s1 = jnp.sum(z2 * hg)
    s2 = jnp.sum(z2 * hg * (g - h))
    log_det = jnp.sum(jnp.where(keep, jnp.log1p(e / t), 0))  # = log|A| − d log α
    return t, g, h, s0, s1, s2, log_det, jnp.sum(g), jnp.sum(hg)


def _maximise(e, keep, z2, yperp2, count, tol, max_iter):
    """Maximise one column's evidence; returns (evidence/n, α, β, iterations, converged, used).

    A global search on a grid of u = log(α/β) picks the basin, then a Newton iteration on
    ℓ'(u) = 0 — MacKay's conditions α‖m‖² = γ, β‖y − Fm‖² = n − γ — safeguarded by bisection
    of a bracket on which ℓ' changes sign, runs in ``lax.while_loop`` until α and β change by
    less than ``tol`` (relative).
    """
    dtype = e.dtype
    eps = jnp.finfo(dtype).eps
    rank = jnp.sum(keep.astype(dtype))
    some = rank > 0
    e_max = jnp.where(some, jnp.max(e), 1)
    e_min = jnp.where(some, jnp.min(jnp.where(keep, e, e_max)), 1)
    # t = α/β is searched in [eps²·e_min, e_max/eps]. Above, gᵢ < eps: the features are ignored to
    # working precision and the value is the supremum as α/β → ∞. Below, the fitted part of the
    # residual, Σ hᵢ²zᵢ² ≤ eps⁴‖z‖², is under the rounding of ‖y_⊥‖² (and when ‖y_⊥‖ = 0 the value
    # is within O(eps²) of its limit as α/β → 0). The bounds scale with F², so rescaling F shifts
    # the whole search and leaves the evidence be.
    u_lo, u_hi = 2 * jnp.log(eps) + jnp.log(e_min), jnp.log(e_max) - jnp.log(eps)
    norm2 = jnp.sum(z2) + yperp2
    used = norm2 > 0
    yperp2 = jnp.where(used, yperp2, 1)  # an unused (zero) column: any finite stand-in

    def value(u):
        _, _, _, s0, _, _, log_det, _, _ = _profile_terms(u, e, keep, z2, yperp2)
        return -0.5 * count * jnp.log(s0) - 0.5 * log_det

    def slope(u):  # ℓ'(u), ℓ''(u), and (α, β) with β profiled out
        t, _, _, s0, s1, s2, _, gamma, hg = _profile_terms(u, e, keep, z2, yperp2)
        r1 = s1 / s0
        d1 = 0.5 * gamma - 0.5 * count * r1
        d2 = -0.5 * count * (s2 / s0 - r1 * r1) - 0.5 * hg
        beta = count / s0
        return d1, d2, t * beta, beta

    step = (u_hi - u_lo) / (_GRID - 1)

    def scan(i, best):
        u = u_lo + step * i
        v = value(u)
        better = v > best[0]
        return jnp.where(better, v, best[0]), jnp.where(better, u, best[1])

    _, u0 = lax.fori_loop(0, _GRID, scan, (jnp.asarray(-jnp.inf, dtype), u_lo))
    d1, d2, alpha, beta = slope(u0)
    # the maximum lies within one grid step of the best grid point, on the side ℓ' points to
    lo = jnp.where(d1 > 0, u0, jnp.maximum(u0 - step, u_lo))
    hi = jnp.where(d1 > 0, jnp.minimum(u0 + step, u_hi), u0)
    # the supremum at a boundary of the range (α/β → 0 or ∞): nothing to iterate
    at_edge = ((u0 <= u_lo) & (d1 <= 0)) | ((u0 >= u_hi) & (d1 >= 0))

    def cond(state):
        it, done = state[-2], state[-1]
        return (it < max_iter) & ~done

    def body(state):
        u, lo, hi, d1, d2, alpha, beta, it, _ = state
        newton = u - d1 / jnp.where(d2 < 0, d2, -1)
        inside = (d2 < 0) & (newton > lo) & (newton < hi)
        u_new = jnp.where(inside, newton, 0.5 * (lo + hi))
        d1_new, d2_new, alpha_new, beta_new = slope(u_new)
        lo = jnp.where(d1_new > 0, u_new, lo)
        hi = jnp.where(d1_new > 0, hi, u_new)
        done = (jnp.abs(alpha_new - alpha) <= tol * alpha) & (jnp.abs(beta_new - beta) <= tol * beta)
        return u_new, lo, hi, d1_new, d2_new, alpha_new, beta_new, it + 1, done | (d1_new == 0)

    init = (u0, lo, hi, d1, d2, alpha, beta, jnp.zeros((), jnp.int32), at_edge | ~used)
    u, _, _, _, _, alpha, beta, it, done = lax.while_loop(cond, body, init)
    return u, alpha, beta, it, done & used, used


def _evidence_at(u, alpha, beta, e, keep, z2, yperp2, count):
    """The evidence per sample at a given (α, β), t = e^u = α/β, with m the posterior mean there:

    L/n = [(n/2) log β − (n/2) log 2π − (β/2)‖y − Fm‖² − (α/2)‖m‖² − (1/2)Σ log(1 + eᵢ/t)] / n.

    Smooth in the spectrum (e, z², ‖y_⊥‖²) at fixed (u, α, β): the envelope theorem makes its
    derivative there the derivative of max L (:func:`_solve`).
    """
    t, g, h, _, _, _, log_det, _, _ = _profile_terms(u, e, keep, z2, yperp2)
    m2 = jnp.sum(g * z2 / (t + e))  # ‖m‖² = Σ eᵢzᵢ²/(t + eᵢ)²
    r2 = jnp.sum(h * h * z2) + yperp2  # ‖y − Fm‖²
    return (
        0.5 * count * (jnp.log(beta) - np.log(2 * np.pi)) - 0.5 * beta * r2 - 0.5 * alpha * m2 - 0.5 * log_det
    ) / count


def _solve(spec: Spectrum, targets, mask, *, task, num_target_classes, max_iter, tol) -> LogMEDetails:
    dtype = spec.features.dtype
    n, d = spec.features.shape
    y = _columns(targets, mask, task=task, num_target_classes=num_target_classes, dtype=dtype)
    # each column at unit scale (an exact power of two): L(c·y)/n = L(y)/n − log c
    y_scale = jax.vmap(power_of_two_scale)(jnp.max(jnp.abs(y), axis=0))
    y = y * y_scale[None, :]
    z2, yperp2 = _projections(spec, y)
    noise = 16 * jnp.finfo(dtype).eps * max(n, d) ** 0.5
    return logme_from_spectrum(
        spec.singular * spec.singular,
        spec.keep,
        z2,
        yperp2,
        count=spec.count,
        residual_floor=noise**2 * jnp.sum(lax.stop_gradient(y) ** 2, axis=0),
        y_scale=y_scale,
        feature_scale=spec.scale,
        tol=tol,
        max_iter=max_iter,
    )


def logme_from_spectrum(
    e, keep, z2, yperp2, *, count, residual_floor, y_scale, feature_scale, tol, max_iter
) -> LogMEDetails:
    """LogME from the spectrum: the maximisation and the evidence for every column (traceable).

    Shared by the whole-array route (:func:`_solve`) and the streamed statistics
    (:mod:`jaxtransfer.streaming`, which gets the same quantities from FᵀF, Fᵀy and ‖y‖²).

    Args:
      e: [m] eigenvalues σᵢ² of FᵀF (or of the kernel FFᵀ), in the units of the scaled features.
      keep: [m] bool, the direction counts in the rank.
      z2: [m, k] (Uᵀy)² of the scaled columns y·y_scale.
      yperp2: [k] ‖y − UUᵀy‖² of the scaled columns.
      count: [] n, the number of samples.
      residual_floor: [k] a column whose ``yperp2`` is at most this lies in the span of the
        features (to rounding): its evidence is unbounded when rank < n.
      y_scale: [k] the columns' scale c (the evidence per sample shifts by log c).
      feature_scale: [] the features' scale (α is reported in the input's units).
      tol, max_iter: as :func:`logme`.
    """
    dtype = e.dtype
    # The maximiser (α, β) is found without derivatives (the iteration never enters a gradient) ...
    stop = lax.stop_gradient
    solve = partial(_maximise, stop(e), keep, count=count, tol=tol, max_iter=max_iter)
    u, alpha, beta, it, converged, used = jax.vmap(solve, in_axes=(1, 0))(stop(z2), stop(yperp2))
    # y in the span of the features (to rounding) with fewer directions than samples: the evidence
    # grows without bound as α/β → 0 (β → ∞); report its supremum, +inf
    rank = jnp.sum(keep, dtype=jnp.int32)
    unbounded = used & (stop(yperp2) <= stop(residual_floor)) & (rank < count)
    # ... and the evidence is re-evaluated at that fixed (α, β), differentiably (envelope theorem:
    # ∂L/∂α = ∂L/∂β = 0 at the maximum, so d(max L)/dF = ∂L/∂F there). Unused and unbounded columns
    # get finite stand-ins (double where: their value is replaced below, their gradient is 0).
    ok = used & ~unbounded
    one = jnp.ones_like(alpha)
    at = partial(_evidence_at, e=e, keep=keep, count=count)
    evidence = jax.vmap(
        lambda u_, a_, b_, z2_, p2_: at(u_, a_, b_, z2=z2_, yperp2=p2_), in_axes=(0, 0, 0, 1, 0)
    )(jnp.where(ok, u, 0), jnp.where(ok, alpha, one), jnp.where(ok, beta, one), z2, jnp.where(ok, yperp2, 1))
    nan = jnp.asarray(jnp.nan, dtype)
    evidence = jnp.where(used, evidence, nan)
    alpha = jnp.where(used, alpha, nan)
    beta = jnp.where(used, beta, nan)
    evidence = jnp.where(unbounded, jnp.inf, evidence + jnp.log(y_scale))
    alpha = jnp.where(unbounded, jnp.nan, alpha * y_scale**2 / feature_scale**2)
    beta = jnp.where(unbounded, jnp.inf, beta * y_scale**2)
    n_used = jnp.sum(used.astype(dtype))
    score = jnp.sum(jnp.where(used, evidence, 0)) / jnp.where(n_used > 0, n_used, jnp.nan)
    return LogMEDetails(score, evidence, alpha, beta, it, converged & ~unbounded, used, unbounded)


def _finish(spec, targets, mask, **opts):
    return _solve(spec, targets, mask, **opts).score


# ----------------------------------------------------------------------------- public


@register(
    EstimatorInfo(
        name="logme",
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
def logme(
    features,
    targets,
    *,
    task="classification",
    num_target_classes=None,
    max_iter=100,
    tol=None,
    mask=None,
) -> jax.Array:
    """LogME: the maximised log evidence per sample of a Bayesian linear model on the features.

    For each target column y (the one-hot columns of the labels for
    classification, each output for regression, each 0/1 label for
    multi-label),

    .. math::
        \\mathcal L(y) = \\frac1n \\max_{\\alpha, \\beta > 0}
        \\log \\mathcal N\\big(y;\\, 0,\\, \\beta^{-1} I_n + \\alpha^{-1} F F^\\top\\big),

    and LogME is the mean of 𝓛 over the columns. The features are used as
    they are (not centred, no bias), as in the paper and its code. Higher is
    better. See the module docstring for the spectral form.

    Args:
      features: float [n, d], the source model's features on the target inputs.
      targets: ``task="classification"``: int labels [n] in
        ``[0, num_target_classes)``; ``"regression"``: float [n] or [n, k];
        ``"multilabel"``: 0/1 labels [n] or [n, k] (bool, int or float).
      task: ``"classification"`` (default), ``"regression"`` or
        ``"multilabel"``; static.
      num_target_classes: static class count for classification (the number
        of one-hot columns); inferred as ``max + 1`` on eager calls.
      max_iter: cap on the iterations per column (default 100; ordinary
        data needs 3 to 6, a supremum at α/β → 0 or ∞ about 30).
      tol: relative change of α and β at which a column has converged;
        default √eps of the features' dtype (the evidence is then accurate to
        about eps, being stationary at the maximum).
      mask: optional bool [n]; False leaves a sample out (equal to dropping it).

    Returns:
      Scalar LogME in the dtype of ``features``. NaN when every target column
      is zero on the kept samples.

    Raises:
      ValueError: wrong shapes, fewer than 2 samples, non-finite values,
        labels out of range, multi-label targets other than 0/1, an unknown
        task, ``num_target_classes`` with a task other than classification,
        mismatched sample counts.
      TypeError: non-numeric input, non-integer labels for classification,
        unknown options.

    Example:
      >>> from jaxtransfer import logme
      >>> f = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
      >>> bool(logme(f, [0, 0, 1, 1]) > logme(f, [0, 1, 0, 1]))
      True

    References:
      You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained
      Models for Transfer Learning", ICML 2021.

    Notes:
      One factorisation per source, the singular spectrum of F itself
      (:func:`jaxtransfer_kernels.spectrum`, uncentred: the eigendecomposition
      of FᵀF or of the n×n kernel FFᵀ where that is accurate, else the SVD of
      F, so that a large common mean or an ill-conditioned F keeps its digits
      in float32), serves every target and column;
      :func:`jaxtransfer.score_matrix` computes it once per source. Features
      and regression targets are rescaled by exact powers of two (the evidence
      per sample shifts by log c under y → c·y, which is added back). Unlike
      the most-copied implementation:

      * the (d − r)·log α term of log|A| is kept (it cancels exactly against
        part of (d/2) log α), so the score is exact for n < d, does not grow
        with d and is unchanged by zero-padded feature columns;
      * the residual ‖y − UUᵀy‖² is computed directly, in a second pass over
        the samples, never as ‖y‖² − ‖Uᵀy‖² (which cancels to 0 in float32
        when y is nearly in the span of the features);
      * there are no absolute guards (1e-5) and the start is scale-covariant,
        so rescaling the features leaves the score unchanged;
      * the maximisation is global in α/β (a grid over log(α/β), β in closed
        form) and then solves MacKay's conditions by safeguarded Newton steps
        in ``lax.while_loop``, per column, until α and β change by less than
        ``tol``; it reports whether it did (:func:`logme_details`). Plain
        MacKay substitution converges slowly and can stop at a lower local
        maximum. When the supremum lies at α/β → 0 or ∞ the search stops where
        the evidence no longer changes in the working precision, and the
        value is the supremum; where that supremum is infinite (the column
        lies in the span of the features, to rounding, with fewer directions
        than samples) the evidence is +inf and ``logme_details`` flags it
        ``unbounded``. Singular values below √max(n, d)·eps·σ_max count as
        zero (the spectrum's rank rule).

      Directions far below σ_max (beyond the working precision) enter as
      log(1 + σ²/t) with t = α/β ≫ σ², so LogME stays accurate there and does
      not warn.

      Gradients (forward and reverse mode, in the features and regression
      targets) follow the envelope theorem: at the maximiser, ∂L/∂α =
      ∂L/∂β = 0, so d(max L)/dF = ∂L/∂F with (α, β) held fixed. The
      maximiser is found on ``stop_gradient``-ed statistics (no derivative
      enters the ``lax.while_loop``), and the evidence is then re-evaluated
      differentiably at that (α, β) from the spectrum, whose factorisation
      differentiates with the rank held fixed
      (:func:`jaxtransfer_kernels.safe_eigh`/``safe_svd``): finite for
      dead units, duplicated or constant columns and n < d. The error is
      O(``tol``) (the stationarity left at convergence). Where the evidence
      is +inf (``unbounded``) the gradient is 0, by choice; where the
      supremum lies at α/β → ∞ (the features explain nothing) it is the
      gradient at the edge of the search, ≈ 0.

      A column that is zero on every kept sample (an absent class) has
      unbounded evidence; it is left out of the average.
    """
    opts = {"task": task, "num_target_classes": num_target_classes, "max_iter": max_iter, "tol": tol}
    return run_pair(logme.info, features, targets, mask, opts)


def logme_details(
    features,
    targets,
    *,
    task="classification",
    num_target_classes=None,
    max_iter=100,
    tol=None,
    mask=None,
) -> LogMEDetails:
    """LogME of one pair with per-column evidence, α, β, iterations and convergence.

    Takes the arguments of :func:`logme`; ``result.score`` equals its value.

    Returns:
      :class:`LogMEDetails`; the per-column fields have one entry per column
      (C one-hot columns for classification, k outputs or labels otherwise).

    Example:
      >>> from jaxtransfer import logme_details
      >>> out = logme_details([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], [0, 0, 1, 1])
      >>> out.evidence.shape, bool(out.converged.all())
      ((2,), True)
    """
    opts = {"task": task, "num_target_classes": num_target_classes, "max_iter": max_iter, "tol": tol}
    return run_pair(logme.info, features, targets, mask, opts, finish=_solve)
