"""Symmetric eigendecomposition and thin SVD whose derivatives stay finite on degenerate spectra.

``jnp.linalg.eigh`` and ``jnp.linalg.svd`` differentiate their eigenvectors
(singular vectors) with the factors 1/(λⱼ − λᵢ) (1/(σⱼ² − σᵢ²) and 1/σᵢ for the
SVD). Rank-deficient features — dead (all-zero) units, duplicated or constant
columns, n < d — have repeated zero eigenvalues, so these factors are 1/0 or
1/(rounding noise), and ``jax.grad`` of anything built on them is NaN or
garbage even when the function itself does not depend on how the degenerate
eigenvectors are chosen.

The two functions here return exactly what ``jnp.linalg`` returns; only their
JVP (and hence VJP) differs: a pair (i, j) whose eigenvalues agree to the
working precision (|λⱼ − λᵢ| ≤ ``tol``) gets the factor 0 instead of
1/(λⱼ − λᵢ), and for the SVD a singular value at or below the rank cut-off
gets 1/σ = 0. That is the derivative with the degenerate eigenspaces and the
rank held fixed: exact for any function that is invariant to rotations inside
each degenerate eigenspace *and* weighs its members alike — which is what the
estimators built on :func:`jaxtransfer_kernels.spectrum` do with the null
space (every direction there is dropped). Pairs with distinct eigenvalues,
including a kept direction against a null one, keep their exact factor.

Limitation: an exactly repeated *non-zero* eigenvalue whose members the
function weighs differently along a perturbation (e.g. φ(λ) with φ' ≠ 0 on an
isotropic block) misses the Daleckii–Krein term φ'(λ)·(VᵀdA V)ᵢⱼ for i ≠ j in
the block: the gradient is then finite but not exact. Generic data (and every
rank-deficient case above) does not have such blocks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["safe_eigh", "safe_svd"]

_HI = lax.Precision.HIGHEST


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HI)


def _masked_reciprocal(x, tol):
    """1/x where |x| > tol, else 0 (double-where: no inf or NaN reaches a gradient)."""
    ok = jnp.abs(x) > tol
    return jnp.where(ok, 1 / jnp.where(ok, x, 1), 0)


@jax.custom_jvp
def safe_eigh(a):
    """``jnp.linalg.eigh(a)`` (ascending eigenvalues w, eigenvectors v) with a rank-fixed JVP.

    Eigenvalue pairs with |wⱼ − wᵢ| ≤ m·eps·max|w| (m the size of ``a``) are
    treated as one degenerate eigenspace: their eigenvector-mixing term is 0
    (module notes). Values are those of ``jnp.linalg.eigh``.

    Args:
      a: float [m, m], symmetric.

    Returns:
      (w [m], v [m, m]).
    """
    w, v = jnp.linalg.eigh(a)
    return w, v


@safe_eigh.defjvp
def _safe_eigh_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, v = jnp.linalg.eigh(a)
    m = a.shape[-1]
    tol = m * jnp.finfo(w.dtype).eps * jnp.max(jnp.abs(w))
    da = 0.5 * (da + da.T)  # eigh symmetrises its input
    vdv = _mm(_mm(v.T, da), v)
    fmat = _masked_reciprocal(w[None, :] - w[:, None], tol)  # F[i, j] = 1/(wⱼ − wᵢ), 0 on the diagonal
    dv = _mm(v, fmat * vdv)
    dw = jnp.diagonal(vdv)
    return (w, v), (dw, dv)


@jax.custom_jvp
def safe_svd(a):
    """``jnp.linalg.svd(a, full_matrices=False)`` (u, s descending, vt) with a rank-fixed JVP.

    Singular values at or below c = √max(n, d)·eps·σ_max (the rank rule of
    :func:`jaxtransfer_kernels.spectrum`) count as zero: their 1/σ factor is 0;
    pairs with |σⱼ² − σᵢ²| ≤ c² are one degenerate subspace (module notes).

    Args:
      a: float [n, d].

    Returns:
      (u [n, k], s [k], vt [k, d]), k = min(n, d).
    """
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return u, s, vt


@safe_svd.defjvp
def _safe_svd_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    n, d = a.shape
    v = vt.T
    cut = max(n, d) ** 0.5 * jnp.finfo(s.dtype).eps * jnp.max(s)
    ds_mat = _mm(_mm(u.T, da), v)  # [k, k]
    ds = jnp.diagonal(ds_mat)
    sd = s[None, :]
    fmat = _masked_reciprocal((sd + sd.T) * (sd - sd.T), cut * cut)  # 1/(σⱼ² − σᵢ²)
    s_inv = jnp.where(s > cut, 1 / jnp.where(s > cut, s, 1), 0)
    dss = sd * ds_mat
    sds = sd.T * ds_mat
    du = _mm(u, fmat * (dss + dss.T) + 0.5 * (ds_mat - ds_mat.T) * jnp.diag(s_inv))
    dv = _mm(v, fmat * (sds + sds.T))
    if n > d:
        dav = _mm(da, v)
        du = du + (dav - _mm(u, _mm(u.T, dav))) * s_inv[None, :]
    if d > n:
        dau = _mm(da.T, u)
        dv = dv + (dau - _mm(v, _mm(vt, dau))) * s_inv[None, :]
    return (u, s, vt), (du, ds, dv.T)
