"""The alignment metrics estimated from m ≪ n random samples, with a confidence interval.

Exact μ needs n×n (or n·k×n·k) Gram matrices: fine at n = 1797, out of reach at n = 60 000.
Every piece of μ and g is a mean over single samples, pairs or triples of samples, so each is
estimated without bias by a U-statistic over a uniform random subsample S of m samples drawn
without replacement, using only m×m (or m·k×m·k) matrices.

Notation: per-sample loss gradients g_i ∈ R^p and factor blocks A_i ∈ R^{k×p} (the rows of
sample i in :func:`~noisegeom.ggn_factor`; A_i = ∇f_i for the scalar square loss), so that
G = (1/n) Σ_i A_iᵀA_i; ḡ = (1/n) Σ_i g_i; Σ₁ = (1/n) Σ_i g_i g_iᵀ − ḡḡᵀ; L = (1/n) Σ_i ℓ_i.
μ = Tr(Σ₁G) / (s ‖G‖_F²) and g(v) = vᵀΣ₁v / (s · vᵀGv), with s = 2L (``normalization='loss'``)
or s = 1 (``'fisher'``), as in :meth:`noisegeom.NoiseGeometry.mu`.

**The decomposition of μ.** With Q_{jil} = g_iᵀA_jᵀA_j g_l and the n-sample means over
*distinct* indices (i ≠ j ≠ l ≠ i for triples, ordered)

* a₀ = mean_i ‖A_i g_i‖²,               a₁ = mean_{i≠j} ‖A_j g_i‖²,
* b₁ = mean_{j≠l} (A_j g_j)·(A_j g_l),   c  = mean_{i,j,l distinct} Q_{jil},
* f₀ = mean_i ‖A_iA_iᵀ‖_F²,             f₁ = mean_{i≠j} ‖A_iA_jᵀ‖_F²,

sorting the terms of Tr(Σ₁G) = (1/n²) Σ_{ij} ‖A_j g_i‖² − (1/n³) Σ_{ijl} Q_{jil} by which indices
coincide (i = j = l: a₀; i = l ≠ j: a₁; i = j ≠ l and l = j ≠ i: b₁ each, as Q_{jil} = Q_{jli};
all distinct: c) gives the exact identities

    Tr(Σ₁G) = ((n − 1)/n²) [a₀ + (n − 1) a₁ − 2 b₁ − (n − 2) c],
    ‖G‖_F²  = f₀/n + ((n − 1)/n) f₁,        2L = mean_i 2ℓ_i.

The estimate T̂ of Tr(Σ₁G) below is a polynomial in the g_i that is unchanged, exactly, when every
g_i is replaced by g_i − w for one vector w (the terms linear and quadratic in w cancel between
â₀, â₁, b̂₁ and ĉ: coefficients 1 − 1 for mean_i (A_i g_i)·(A_i w), −2(n − 1) + 2 + 2(n − 2) = 0
for mean_{j≠l} (A_j w)·(A_j g_l), 1 + (n − 1) − 2 − (n − 2) = 0 for mean_i ‖A_i w‖²), like Σ₁
itself; it is computed from gradients centred on the subsample's mean, for rounding.

Each mean over distinct tuples of the n samples is estimated by the same mean over the distinct
tuples of S (a U-statistic); the mean over all C(n, m) subsamples of a U-statistic is the
n-sample mean (every tuple of distinct samples lies in the same number of subsamples), so
substituting â₀, â₁, b̂₁, ĉ, f̂₀, f̂₁ into the identities above gives unbiased estimates of
Tr(Σ₁G), ‖G‖_F² and 2L, exact when m = n. μ̂ is their ratio, consistent but not unbiased
(its bias is O(1/m), below its O(1/√m) standard error).

**The decomposition of g(v).** With a_i = g_i·v and b_i = ‖A_i v‖²,

    vᵀΣ₁v = ((n − 1)/n) (q₀ − q₁),   vᵀGv = mean_i b_i,

q₀ = mean_i a_i², q₁ = mean_{i≠l} a_i a_l; estimated the same way.

**Computation.** For μ: P = A_S G_Sᵀ (m·k×m, 2m²kp flops) holds every A_j g_i; from it
T_{ji} = ‖A_j g_i‖², R_{jl} = (A_j g_j)·(A_j g_l) and, with u_j = Σ_{i≠j} A_j g_i, the sum over
distinct triples Σ_j (‖u_j‖² − Σ_{i≠j} T_{ji}), in O(m²k). F_{ij} = ‖A_iA_jᵀ‖_F² comes from the
Gram A_S A_Sᵀ (m·k×m·k, (mk)²p flops by BLAS syrk) or, when 3p < m·k, from M = A_SᵀA_S (p×p,
3mkp² flops): Σ_j F_ij = Σ_rows of A_i M A_iᵀ. A p×p matrix is never formed when p ≥ m·k/3.

**Standard error.** The delete-one jackknife over the m subsampled points: θ̂_(r) is the same
estimator on S∖{r}; every U-statistic's leave-one-out value follows from the full sums less the
row and column sums (pairs) or the triples through r, so all m replicates cost O(m²k) beyond
the matrices above. v_J = ((m − 1)/m) Σ_r (θ̂_(r) − θ̄)², times the finite-population
correction 1 − m/n for sampling without replacement (so the error is 0 at m = n);
SE = √((1 − m/n) v_J), and the interval is θ̂ ± z SE, z the normal quantile of the level, or
(``interval='log'``) θ̂·exp(∓z SE/θ̂), the normal interval of log θ̂ by the delta method. The
jackknife variance of a smooth function of U-statistics is consistent (Arvesen, 1969). At small
m the estimates are skewed to the right (the per-sample terms of the numerator are heavy tailed
after training), and a draw without the large terms has both a low θ̂ and a small SE: the
symmetric interval then lies below the true value more often than above it (the digits CNN of
``make bench`` after training, m = 200: 21 of 26 misses in 300 draws); the log interval, longer
above, is better balanced (11 of 20) and closer to its nominal coverage.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from numbers import Real

import numpy as np
import torch
from scipy.stats import norm

from ._checks import as_tensor, check_finite_result, check_int, check_loss_positive, check_positive, check_seed
from .alignment import _gram
from .autodiff import _check_inputs, ggn_factor, jacobian, per_sample_gradients, per_sample_losses
from .models import FlatModel

__all__ = ["Estimate", "estimate_mu", "estimate_g", "estimate_mu_from_sample", "estimate_g_from_sample"]

# the triple U-statistic of μ needs 3 distinct samples, and its delete-one jackknife 3 after a deletion
MIN_M_MU = 4
# g's pair U-statistic needs 2 distinct samples, 2 after a deletion
MIN_M_G = 3


@dataclass(frozen=True)
class Estimate:
    """An estimate from m of n samples, its standard error and a normal confidence interval.

    Attributes
    ----------
    value : float or numpy.ndarray
        The estimate (one entry per direction for :func:`estimate_g` with several directions).
    stderr : float or numpy.ndarray
        Jackknife standard error with the finite-population correction √(1 − m/n).
    ci_low, ci_high : float or numpy.ndarray
        value ∓ z·stderr, z = Φ⁻¹((1 + level)/2) (or value·exp(∓z·stderr/value), ``interval='log'``).
    level : float
        Nominal coverage of the interval.
    m, n : int
        Subsampled and total number of samples.
    interval : {'normal', 'log'}
        Which interval ``ci_low``, ``ci_high`` are.
    parts : dict
        Unbiased estimates of the pieces (see the module docstring): for μ ``'trace_sigma1_G'``,
        ``'frobenius2_G'``, ``'scale'`` (2L̂, the given 2L, or 1) and the U-statistics ``'f0'``,
        ``'f1'``; for g ``'vSigma1v'``, ``'vGv'``, ``'scale'`` and the U-statistics ``'q0'``, ``'q1'``.
        (μ's â₀, â₁, b̂₁, ĉ are computed from gradients centred on the subsample's mean, which
        leaves T̂ unchanged but not them, so they are not reported.)
    parts_stderr : dict
        Jackknife standard errors of ``parts`` (same correction; 0 for a scale that is given).
    indices : numpy.ndarray or None
        The subsampled rows (sorted), when the estimate was drawn from a model and data.
    """

    value: float | np.ndarray
    stderr: float | np.ndarray
    ci_low: float | np.ndarray
    ci_high: float | np.ndarray
    level: float
    m: int
    n: int
    interval: str = "normal"
    parts: dict = field(default_factory=dict)
    parts_stderr: dict = field(default_factory=dict)
    indices: np.ndarray | None = None

    def __str__(self) -> str:
        def fmt(x):
            return np.array2string(np.asarray(x), precision=4) if np.ndim(x) else f"{x:.4g}"
        return (f"{fmt(self.value)} ± {fmt(self.stderr)} ({100 * self.level:g}% CI [{fmt(self.ci_low)}, "
                f"{fmt(self.ci_high)}], m = {self.m} of n = {self.n})")


# ------------------------------------------------------------------ argument checks

def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, Real):
        raise TypeError(f"level must be a real number in (0, 1), got {level!r}")
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return level


def _check_normalization(normalization) -> str:
    if normalization not in ("loss", "fisher"):
        raise ValueError(f"normalization must be 'loss' or 'fisher', got {normalization!r}")
    return normalization


def _check_sample(grads, factor, n, min_m: int):
    """The subsample's gradients (m×p) and factor (m·k×p), and the population size n ≥ m."""
    grads = as_tensor(grads, "grads", ndim=2)
    factor = as_tensor(factor, "factor", ndim=2)
    m, p = grads.shape
    if m < min_m:
        raise ValueError(f"grads must hold m >= {min_m} subsampled rows (the U-statistics and their "
                         f"delete-one jackknife need them), got shape {tuple(grads.shape)}")
    if p == 0:
        raise ValueError(f"grads must have at least one column, got shape {tuple(grads.shape)}")
    if factor.shape[1] != p:
        raise ValueError(f"factor must have p = {p} columns like grads, got shape {tuple(factor.shape)}")
    if factor.shape[0] == 0 or factor.shape[0] % m:
        raise ValueError(f"factor must have k·m rows, a positive multiple of m = {m} (the rows of grads), "
                         f"got {factor.shape[0]}")
    n = check_int(n, "n", low=m)
    return grads, factor, n


def _scale(normalization: str, losses, exact_loss, m: int, device=None):
    """s on the subsample and its m leave-one-out values: 2L̂ from the losses, 2L given, or 1
    (the leave-one-out values on ``device``, the gradients')."""
    if normalization == "fisher":
        return 1.0, torch.ones(m, dtype=torch.float64, device=device)
    if exact_loss is not None:
        if losses is not None:
            raise ValueError("give losses (of the subsample) or exact_loss (L of all n samples), not both")
        exact_loss = check_positive(exact_loss, "exact_loss")
        return 2.0 * exact_loss, torch.full((m,), 2.0 * exact_loss, dtype=torch.float64, device=device)
    if losses is None:
        raise ValueError("normalization='loss' divides by 2L: give losses (the per-sample losses of the "
                         "subsample) or exact_loss (L of all n samples), or use normalization='fisher'")
    losses = as_tensor(losses, "losses", ndim=1).to(device)
    if losses.shape[0] != m:
        raise ValueError(f"losses must have one entry per row of grads ({m}), got {losses.shape[0]}")
    if bool((losses < 0).any()):
        raise ValueError("losses must be >= 0 (per-sample losses)")
    total = check_finite_result(2.0 * losses.sum(), "twice the sum of the losses", "losses")
    check_loss_positive(float(total) / (2 * m))
    return float(total) / m, (total - 2.0 * losses) / (m - 1)


def _generator(seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(check_seed(seed))


# ------------------------------------------------------------------ the jackknife

def _jackknife_se(loo: torch.Tensor, m: int, n: int) -> np.ndarray:
    """√((1 − m/n) · (m−1)/m Σ_r (θ̂_(r) − θ̄)²) over the first axis of ``loo``."""
    fpc = max(0.0, 1.0 - m / n)
    if fpc == 0.0:                              # m = n: the estimate is the exact value
        return np.zeros(loo.shape[1:])
    dev = loo - loo.mean(0)
    var = (m - 1) / m * (dev * dev).sum(0)
    return np.sqrt(fpc * var.cpu().numpy())


def _check_interval(interval) -> str:
    if interval not in ("normal", "log"):
        raise ValueError(f"interval must be 'normal' or 'log', got {interval!r}")
    return interval


def _result(value, loo, parts, parts_loo, m, n, level, interval: str, single: bool, inputs: str) -> Estimate:
    # ``inputs`` names the caller's arguments: grads, factor or losses, or theta, X or y
    value = check_finite_result(value, "the estimate", inputs)
    check_finite_result(loo, "a leave-one-out estimate", f"{inputs} (or m is too small)")
    for key in parts:                           # no nan or inf in the pieces or their standard errors
        check_finite_result(parts[key], f"the estimate of {key}", inputs)
        check_finite_result(parts_loo[key], f"a leave-one-out estimate of {key}", inputs)
    se = check_finite_result(_jackknife_se(loo, m, n), "the standard error", inputs)
    z = float(norm.ppf(0.5 + level / 2))
    val = value.cpu().numpy()
    if interval == "normal":
        out = (val, se, val - z * se, val + z * se)
    else:
        if not bool((val > 0).all()):
            raise ValueError("interval='log' needs a positive estimate (the metrics are ratios of non-negative "
                             f"quantities, but this estimate is {val}); use interval='normal'")
        # delta method on log θ̂: SE(log θ̂) ≈ SE/θ̂, an interval that is not symmetric about θ̂
        spread = np.exp(z * se / val)
        out = (val, se, val / spread, val * spread)
    if single:
        out = tuple(float(x.reshape(-1)[0]) for x in out)
        parts = {k: float(v.reshape(-1)[0]) for k, v in parts.items()}
        pse = {k: float(_jackknife_se(parts_loo[k], m, n).reshape(-1)[0]) for k in parts}
    else:
        parts = {k: v.cpu().numpy().copy() for k, v in parts.items()}
        pse = {k: _jackknife_se(parts_loo[k], m, n) for k in parts}
    for key, value in pse.items():
        check_finite_result(value, f"the standard error of {key}", inputs)
    return Estimate(*out, level=level, m=m, n=n, interval=interval, parts=parts, parts_stderr=pse)


def _pair_mean(h: torch.Tensor):
    """Mean over ordered pairs i ≠ j of h[i, j] (diagonal ignored), and its m leave-one-out values."""
    m = h.shape[0]
    off = h.clone()
    off.fill_diagonal_(0.0)
    total = off.sum()
    # deleting r removes row r and column r
    loo = (total - off.sum(1) - off.sum(0)) / ((m - 1) * (m - 2))
    return total / (m * (m - 1)), loo


def _single_mean(d: torch.Tensor):
    """Mean of d over the m points (along the first axis) and its m leave-one-out values."""
    m = d.shape[0]
    total = d.sum(0)
    return total / m, (total - d) / (m - 1)


# ------------------------------------------------------------------ μ

def _frobenius_pairs(A: torch.Tensor, m: int, side: str):
    """F_ii = ‖A_iA_iᵀ‖_F² (m,) and the off-diagonal row sums Σ_{j≠i} ‖A_iA_jᵀ‖_F² (m,)."""
    k, p = A.shape[0] // m, A.shape[1]
    if side == "auto":
        side = "parameters" if 3 * p < m * k else "samples"
    if side == "samples":
        K = _gram(A).reshape(m, k, m, k)
        F = (K * K).sum((1, 3))
        diag = torch.diagonal(F).clone()
        return diag, F.sum(1) - diag
    blocks = A.reshape(m, k, p)
    own = blocks @ blocks.transpose(1, 2)                        # A_iA_iᵀ, k×k per sample
    diag = (own * own).sum((1, 2))
    M = _gram(A.T)                                               # AᵀA, p×p: only when p < mk/3
    full = ((A @ M) * A).sum(1).reshape(m, k).sum(1)             # Σ_j ‖A_iA_jᵀ‖_F² = Tr(A_i M A_iᵀ)
    return diag, full - diag


def _mu_pieces(grads: torch.Tensor, A: torch.Tensor, n: int, side: str):
    """U-statistics of μ's numerator and denominator on the subsample, with leave-one-out values."""
    m = grads.shape[0]
    k = A.shape[0] // m
    # T̂ is unchanged, in exact arithmetic, when every g_i is shifted by one vector (module
    # docstring); centring on the subsample's mean spares the rounding error of terms of size
    # ‖Aḡ‖² that cancel when the full gradient is large next to the noise
    grads = grads - grads.mean(0)
    P = (A @ grads.T).reshape(m, k, m)                           # P[j, :, i] = A_j g_i
    T = (P * P).sum(1)                                           # T[j, i] = ‖A_j g_i‖²
    rng = torch.arange(m, device=P.device)
    own = P[rng, :, rng]                                         # A_j g_j, (m, k)
    R = torch.einsum("ja,jal->jl", own, P)                       # R[j, l] = (A_j g_j)·(A_j g_l)
    a0, a0_loo = _single_mean(torch.diagonal(T).clone())
    a1, a1_loo = _pair_mean(T)
    b1, b1_loo = _pair_mean(R)
    # distinct triples (i, j, l), summand Q_{jil} = (A_j g_i)·(A_j g_l):
    # with j in the middle: Σ_{i≠j, l≠j, i≠l} Q_{jil} = ‖u_j‖² − Σ_{i≠j} T[j, i], u_j = Σ_{i≠j} A_j g_i
    u = P.sum(2) - own
    T_off = T.clone()
    T_off.fill_diagonal_(0.0)
    by_middle = (u * u).sum(1) - T_off.sum(1)
    # with r as i (or, the same by the symmetry of Q in i and l, as l), j ≠ r and l ∉ {j, r}:
    # Σ_{l∉{j,r}} Q_{jrl} = (A_j g_r)·u_j − ‖A_j g_r‖²
    W = torch.einsum("jar,ja->jr", P, u) - T
    W.fill_diagonal_(0.0)
    by_end = W.sum(0)
    triples = by_middle.sum()
    c = triples / (m * (m - 1) * (m - 2))
    c_loo = (triples - by_middle - 2.0 * by_end) / ((m - 1) * (m - 2) * (m - 3))
    f0_i, f1_rows = _frobenius_pairs(A, m, side)
    f0, f0_loo = _single_mean(f0_i)
    f1_total = f1_rows.sum()
    f1 = f1_total / (m * (m - 1))
    f1_loo = (f1_total - 2.0 * f1_rows) / ((m - 1) * (m - 2))    # F is symmetric: row r and column r

    def numerator(a0, a1, b1, c):
        return (n - 1) / n ** 2 * (a0 + (n - 1) * a1 - 2.0 * b1 - (n - 2) * c)

    def denominator(f0, f1):
        return f0 / n + (n - 1) / n * f1
    parts = {"trace_sigma1_G": numerator(a0, a1, b1, c), "frobenius2_G": denominator(f0, f1), "f0": f0, "f1": f1}
    loo = {"trace_sigma1_G": numerator(a0_loo, a1_loo, b1_loo, c_loo), "frobenius2_G": denominator(f0_loo, f1_loo),
           "f0": f0_loo, "f1": f1_loo}
    return parts, loo


def estimate_mu_from_sample(grads, factor, n: int, *, losses=None, exact_loss: float | None = None,
                            normalization: str = "loss", level: float = 0.95, interval: str = "normal",
                            side: str = "auto", _inputs: str = "grads, factor or losses") -> Estimate:
    """μ = Tr(Σ₁G) / (s‖G‖_F²) of n samples from the rows of a uniform subsample of m of them.

    Parameters
    ----------
    grads : array, shape (m, p)
        Per-sample loss gradients g_i of m samples drawn uniformly **without replacement** from
        the n (any order).
    factor : array, shape (m·k, p)
        Their Gauss–Newton factor rows, k consecutive rows A_i per sample, in the order of
        ``grads`` (:func:`~noisegeom.ggn_factor` of the subsample; J for the scalar square loss).
    n : int
        The number of samples the subsample was drawn from, n ≥ m.
    losses : array, shape (m,), optional
        Per-sample losses ℓ_i of the subsample: 2L is estimated by their mean times 2.
    exact_loss : float, optional
        L of all n samples, if known (then ``losses`` must not be given).
    normalization : {'loss', 'fisher'}
        s = 2L (needs ``losses`` or ``exact_loss``) or s = 1, as in
        :meth:`noisegeom.NoiseGeometry.mu`.
    level : float
        Nominal coverage of the interval, in (0, 1).
    interval : {'normal', 'log'}
        θ̂ ± z·SE (default), or θ̂·exp(∓z·SE/θ̂), the normal interval for log θ̂ by the delta
        method (needs θ̂ > 0). At small m after training the estimates are skewed to the right
        and the log interval is the better calibrated (module docstring, "Standard error").
    side : {'auto', 'samples', 'parameters'}
        How ‖A_iA_jᵀ‖_F² is summed: the Gram A_S A_Sᵀ (m·k×m·k, (mk)²p flops) or the p×p matrix
        A_SᵀA_S (3mkp² flops); 'auto' takes 'parameters' when 3p < m·k. Same result.

    Returns
    -------
    Estimate
        μ̂ = T̂ / (ŝ D̂), T̂ and D̂ the unbiased estimates of Tr(Σ₁G) and ‖G‖_F² of the module
        docstring (in ``parts``), with its delete-one jackknife standard error (× √(1 − m/n)) and
        the normal interval. Exact, with zero error, when m = n.

    Notes
    -----
    m ≥ 4 (the triple U-statistic after one deletion). Cost: 2m²kp flops for A_S G_Sᵀ, plus
    (mk)²p (or 3mkp²) for ‖G‖_F², plus O(m²k); memory m²k numbers.
    """
    grads, factor, n = _check_sample(grads, factor, n, MIN_M_MU)
    normalization = _check_normalization(normalization)
    level = _check_level(level)
    interval = _check_interval(interval)
    if side not in ("auto", "samples", "parameters"):
        raise ValueError(f"side must be 'auto', 'samples' or 'parameters', got {side!r}")
    m = grads.shape[0]
    s, s_loo = _scale(normalization, losses, exact_loss, m, grads.device)
    parts, loo = _mu_pieces(grads, factor, n, side)
    for key in ("trace_sigma1_G", "frobenius2_G"):       # an overflow, not a vanishing G
        check_finite_result(parts[key], f"the estimate of {key}", _inputs)
    if not float(parts["frobenius2_G"]) > 0:
        raise ValueError("factor: every A_iA_jᵀ of the subsample vanishes (‖G‖_F² estimated as 0): "
                         "μ is undefined")
    value = parts["trace_sigma1_G"] / (s * parts["frobenius2_G"])
    value_loo = loo["trace_sigma1_G"] / (s_loo * loo["frobenius2_G"])
    parts["scale"], loo["scale"] = torch.tensor(s, dtype=torch.float64, device=grads.device), s_loo
    return _result(value, value_loo, parts, loo, m, n, level, interval, single=True, inputs=_inputs)


# ------------------------------------------------------------------ g

def _directions(v, p: int):
    V = as_tensor(v, "v", ndim=(1, 2))
    single = V.ndim == 1
    V = V[:, None] if single else V
    if V.shape[0] != p or V.shape[1] == 0:
        raise ValueError(f"v must have p = {p} rows and at least one column, got shape {tuple(V.shape)}")
    zero = (V * V).sum(0) == 0
    if bool(zero.any()):
        raise ValueError(f"v column {int(torch.nonzero(zero)[0])} is the zero vector")
    return V, single


def _g_from_projections(a: torch.Tensor, b: torch.Tensor, n: int, s, s_loo, level: float, interval: str,
                        single: bool, inputs: str) -> Estimate:
    """g(v) from a_i = g_i·v (m, r) and b_i = ‖A_i v‖² (m, r)."""
    m = a.shape[0]
    q0, q0_loo = _single_mean(a * a)
    total = a.sum(0)
    # Σ_{i≠l} a_i a_l = (Σ a)² − Σ a², with and without sample r
    q1 = (total ** 2 - m * q0) / (m * (m - 1))
    rest = total - a
    q1_loo = (rest ** 2 - (m - 1) * q0_loo) / ((m - 1) * (m - 2))
    # q₀ − q₁ is the sample variance Σ(a_i − ā)²/(m − 1): computed centred, it is ≥ 0 and free of
    # the cancellation of two moments of size ā²; without r, Σ_{i≠r}(a_i − ā_(r))² = Σ(a_i − ā)² − m/(m−1)(a_r − ā)²
    dev = a - total / m
    ss = (dev * dev).sum(0)
    var, var_loo = ss / (m - 1), (ss - m / (m - 1) * dev * dev) / (m - 2)
    vGv, vGv_loo = _single_mean(b)
    bad = vGv <= 0
    if bool(bad.any()):
        raise ValueError(f"v column {int(torch.nonzero(bad)[0])} has A_i v = 0 for every subsampled i "
                         f"(vᵀGv estimated as 0): g is undefined along it")
    num, num_loo = (n - 1) / n * var, (n - 1) / n * var_loo.clamp_min(0.0)
    value = num / (s * vGv)
    value_loo = num_loo / (s_loo[:, None] * vGv_loo)
    r = a.shape[1]
    parts = {"vSigma1v": num, "vGv": vGv, "q0": q0, "q1": q1,
             "scale": torch.full((r,), float(s), dtype=torch.float64, device=a.device)}
    loo = {"vSigma1v": num_loo, "vGv": vGv_loo, "q0": q0_loo, "q1": q1_loo,
           "scale": s_loo[:, None].expand(m, r)}
    return _result(value, value_loo, parts, loo, m, n, level, interval, single, inputs)


def estimate_g_from_sample(grads, factor, v, n: int, *, losses=None, exact_loss: float | None = None,
                           normalization: str = "loss", level: float = 0.95,
                           interval: str = "normal", _inputs: str = "grads, factor or losses") -> Estimate:
    """g(v) = vᵀΣ₁v / (s · vᵀGv) of n samples from a uniform subsample of m of them.

    Parameters
    ----------
    grads, factor, n, losses, exact_loss, normalization, level, interval
        As in :func:`estimate_mu_from_sample` (here m ≥ 3).
    v : array, shape (p,) or (p, r)
        A direction, or r directions as columns (need not be normalised).

    Returns
    -------
    Estimate
        ĝ = ((n − 1)/n)(q̂₀ − q̂₁) / (ŝ · mean_S ‖A_i v‖²), per direction: a float for one direction,
        arrays of shape (r,) for r. Only G_S v and A_S v are formed (O(mkpr) flops).
    """
    grads, factor, n = _check_sample(grads, factor, n, MIN_M_G)
    normalization = _check_normalization(normalization)
    level = _check_level(level)
    interval = _check_interval(interval)
    m, p = grads.shape
    V, single = _directions(v, p)
    s, s_loo = _scale(normalization, losses, exact_loss, m, grads.device)
    k = factor.shape[0] // m
    AV = (factor @ V).reshape(m, k, -1)
    return _g_from_projections(grads @ V, (AV * AV).sum(1), n, s, s_loo, level, interval, single, _inputs)


# ------------------------------------------------------------------ from a model and data

def _subsample(model, theta, X, y, loss, m, seed, min_m, chunk_size, need_losses: bool):
    """Draw m of the n rows and compute their gradients, factor rows and (if needed) losses."""
    theta, X, y = _check_inputs(model, theta, X, y, loss)
    n = X.shape[0]
    if n < min_m:
        raise ValueError(f"X must hold n >= {min_m} samples to estimate from a subsample, got {n}")
    m = check_int(m, "m", low=min_m, high=n)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", low=1)
    idx = torch.sort(torch.randperm(n, generator=_generator(seed))[:m]).values
    Xs, ys = X[idx], y[idx]
    losses = None
    if loss == "mse":
        J = jacobian(model, theta, Xs, chunk_size=chunk_size)
        if J.ndim == 2:
            # scalar model: one Jacobian pass gives both, g_i = e_i ∇f_i
            e = model.forward(theta, Xs) - ys
            grads, factor = e[:, None] * J, J
            losses = 0.5 * e * e if need_losses else None
        else:
            factor = J.reshape(-1, J.shape[-1])
            grads = per_sample_gradients(model, theta, Xs, ys, loss=loss, chunk_size=chunk_size)
    else:
        factor = ggn_factor(model, theta, Xs, ys, loss=loss, chunk_size=chunk_size)
        grads = per_sample_gradients(model, theta, Xs, ys, loss=loss, chunk_size=chunk_size)
    if need_losses and losses is None:
        losses = per_sample_losses(model, theta, Xs, ys, loss=loss)
    return grads, factor, losses, n, idx.numpy()


def _check_options(normalization, level, interval, exact_loss):
    """Cheap checks first, before any gradient is computed."""
    normalization = _check_normalization(normalization)
    _check_level(level)
    _check_interval(interval)
    if exact_loss is not None:
        check_positive(exact_loss, "exact_loss")
    return normalization == "loss" and exact_loss is None


def estimate_mu(model, theta, X, y, *, m: int, loss: str = "mse", normalization: str = "loss",
                level: float = 0.95, interval: str = "normal", seed=0, exact_loss: float | None = None,
                chunk_size: int | None = None) -> Estimate:
    """Estimate μ(θ) from m random samples of (X, y), with a confidence interval.

    Draws m of the n rows uniformly without replacement, computes their per-sample gradients
    and Gauss–Newton factor (:func:`~noisegeom.per_sample_gradients`,
    :func:`~noisegeom.ggn_factor`; one Jacobian pass for a scalar model with the square loss)
    and calls :func:`estimate_mu_from_sample`. Nothing of size n beyond X is formed.

    Parameters
    ----------
    model : FlatModel
    theta, X, y : arrays
        The point θ and all n samples.
    m : int
        Subsample size, 4 ≤ m ≤ n. The standard error falls like √((1 − m/n)/m).
    loss : {'mse', 'cross_entropy'}
    normalization : {'loss', 'fisher'}
        Divide by 2L (estimated from the subsample's losses unless ``exact_loss`` is given) or
        not (μ_F, for the cross-entropy), as in :meth:`noisegeom.NoiseGeometry.mu`.
    level : float
        Nominal coverage of the interval, in (0, 1).
    interval : {'normal', 'log'}
        As in :func:`estimate_mu_from_sample`.
    seed : int or torch.Generator
        The draw of the subsample (a generator is advanced, so repeated calls draw anew).
    exact_loss : float, optional
        L(θ) of all n samples, if known.
    chunk_size : int, optional
        Samples per vmapped chunk of the gradient and Jacobian passes.

    Returns
    -------
    Estimate
        With ``indices``, the subsampled rows.

    Examples
    --------
    >>> model = ng.small_cnn()                                    # doctest: +SKIP
    >>> est = ng.estimate_mu(model, model.theta0, X, y, m=200, loss="cross_entropy",
    ...                      normalization="fisher")              # doctest: +SKIP
    >>> est.value, (est.ci_low, est.ci_high)                      # doctest: +SKIP
    """
    need_losses = _check_options(normalization, level, interval, exact_loss)
    grads, factor, losses, n, idx = _subsample(model, theta, X, y, loss, m, seed, MIN_M_MU, chunk_size,
                                               need_losses)
    est = estimate_mu_from_sample(grads, factor, n, losses=losses, exact_loss=exact_loss,
                                  normalization=normalization, level=level, interval=interval,
                                  _inputs="theta, X or y")
    return replace(est, indices=idx)


def estimate_g(model, theta, X, y, v, *, m: int, loss: str = "mse", normalization: str = "loss",
               level: float = 0.95, interval: str = "normal", seed=0, exact_loss: float | None = None,
               chunk_size: int | None = None) -> Estimate:
    """Estimate g(θ; v) along one or several directions from m random samples of (X, y).

    Parameters
    ----------
    v : array, shape (p,) or (p, r)
        A direction, or r directions as columns.
    m : int
        Subsample size, 3 ≤ m ≤ n.
    model, theta, X, y, loss, normalization, level, interval, seed, exact_loss, chunk_size
        As in :func:`estimate_mu`.

    Returns
    -------
    Estimate
        Floats for one direction, arrays of shape (r,) for r directions; ``indices`` the
        subsampled rows. See :func:`estimate_g_from_sample`.
    """
    need_losses = _check_options(normalization, level, interval, exact_loss)
    if isinstance(model, FlatModel):                            # a wrong model is _check_inputs' to report
        _directions(v, model.p)                                 # before any gradient is computed
    grads, factor, losses, n, idx = _subsample(model, theta, X, y, loss, m, seed, MIN_M_G, chunk_size,
                                               need_losses)
    est = estimate_g_from_sample(grads, factor, v, n, losses=losses, exact_loss=exact_loss,
                                 normalization=normalization, level=level, interval=interval,
                                 _inputs="theta, X or y")
    return replace(est, indices=idx)
