"""Auto-checks of chapter 3, *Measuring noise geometry*.

Checked exercises
-----------------
``ex-ch3-gram-check``
    ``mu_isotropic_gram(J, e)``, ``g_gram(J, e, v)``, ``g_subspace_gram(J, e, V)``:
    the Gram-matrix formulas. Compared, on fresh random J and e, with the
    definitions evaluated on dense Σ₁ and G built inside the check (an independent
    route) and with ``ng.NoiseGeometry.square_loss``; plus perfect alignment (all
    residuals of equal magnitude and uncorrelated with the Jacobian rows give
    known values), invariance of g(v) under v -> a v, and g(V) = g(v) for
    V = [v / |v|].
``ex-ch3-hutchinson``
    ``frobenius2_hutchinson(matvec, p, num_probes, seed)``: a diagonal matrix must
    be estimated exactly with standard error 0 (Rademacher probes), ``matvec``
    must be called ``num_probes`` times; on a dense matrix the estimate must lie
    within six exact standard deviations (Var ||Az||^2 = 2 sum_{i != j} (A^2)_ij^2
    for Rademacher z) of ||A||_F^2 and the reported standard error within 25% of
    the exact one.

Tolerances: float64; 1e-9 relative for the Gram formulas.
"""

from assignments.otter_checks import check

SETUP = """\
import numpy as np
import torch

import noisegeom as ng
from noisegeom import two_layer_task
"""


# --------------------------------------------------------------- ex-ch3-gram-check

@check("ex-ch3-gram-check", points=2)
def gram_against_dense(mu_isotropic_gram, g_gram, g_subspace_gram):
    """Public: the three formulas against the definitions on dense Sigma_1 and G."""
    import numpy as np
    import torch

    names = {"mu_isotropic_gram": mu_isotropic_gram, "g_gram": g_gram,
             "g_subspace_gram": g_subspace_gram}
    for name, f in names.items():
        assert f is not None, f"{name} is not defined yet"
    gen = torch.Generator().manual_seed(303)
    n, p, k = 12, 40, 3
    J = torch.randn(n, p, dtype=torch.float64, generator=gen)
    e = torch.randn(n, dtype=torch.float64, generator=gen)
    v = torch.randn(p, dtype=torch.float64, generator=gen)
    V, _ = torch.linalg.qr(torch.randn(p, k, dtype=torch.float64, generator=gen))
    grads = e[:, None] * J                              # g_i = e_i grad f_i
    C = grads - grads.mean(0)
    sigma1 = C.T @ C / n
    G = J.T @ J / n
    two_L = float((e ** 2).mean())
    expected = {
        "mu_isotropic_gram": float(sigma1.trace() * G.trace() / (p * two_L * (G ** 2).sum())),
        "g_gram": float(v @ sigma1 @ v / (two_L * v @ G @ v)),
        "g_subspace_gram": float((V * (sigma1 @ V)).sum() / (two_L * (V * (G @ V)).sum())),
    }
    got = {"mu_isotropic_gram": mu_isotropic_gram(J.clone(), e.clone()),
           "g_gram": g_gram(J.clone(), e.clone(), v.clone()),
           "g_subspace_gram": g_subspace_gram(J.clone(), e.clone(), V.clone())}
    hints = {
        "mu_isotropic_gram": "mu_iso = (n sum_i e_i^2 K_ii - e^T K e) Tr K / (p |e|^2 |K|_F^2)",
        "g_gram": "g(v) = (n sum_i e_i^2 s_i^2 - (e.s)^2) / (|e|^2 |s|^2) with s = J v",
        "g_subspace_gram": "g(V) = (n sum_i e_i^2 |Z_i|^2 - |Z^T e|^2) / (|e|^2 |Z|_F^2) "
                           "with Z = J V and Z_i its rows",
    }
    for name, value in got.items():
        assert value is not None and value is not Ellipsis, (
            f"{name} returned {value!r}; expected a float")
        value = float(np.asarray(value))
        assert abs(value - expected[name]) <= 1e-9 * abs(expected[name]), (
            f"{name}: the definition on dense Sigma_1 and G gives {expected[name]:.12f}, "
            f"got {value:.12f}. Hint: {hints[name]}; the factor n comes from "
            f"Sigma_1 = (1/n) J^T D^2 J - (1/n^2) J^T e e^T J")


@check("ex-ch3-gram-check", points=1)
def gram_perfect_alignment(mu_isotropic_gram, g_gram, g_subspace_gram):
    """Public: orthonormal Jacobian rows and residuals +-1, where the values are known by hand."""
    import numpy as np
    import torch

    for name, f in [("mu_isotropic_gram", mu_isotropic_gram), ("g_gram", g_gram),
                    ("g_subspace_gram", g_subspace_gram)]:
        assert f is not None, f"{name} is not defined yet"
    # orthonormal rows (K = I) and residuals +-1: every value is known by hand
    n, p = 4, 9
    Q, _ = torch.linalg.qr(torch.randn(p, n, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(1)))
    J = Q.T                                             # orthonormal rows
    e = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    v = J[0] + J[1]                                     # s = J v = (1, 1, 0, 0): e.s = 0
    value = g_gram(J, e, 3.0 * v)
    assert value is not None and value is not Ellipsis, f"g_gram returned {value!r}"
    assert abs(float(np.asarray(value)) - 1.0) <= 1e-10, (
        f"equal residual magnitudes and e.(J v) = 0: the noise along v is exactly "
        f"2L v^T G v, so g(v) = 1 (whatever the length of v); got {float(value):.12f}")
    V = torch.stack([J[0], J[1]], dim=1)                # orthonormal, Z^T e = (1, -1)
    # by hand: n sum e_i^2 |Z_i|^2 = 4 * 2 = 8, |Z^T e|^2 = 2, |e|^2 |Z|_F^2 = 4 * 2
    value = g_subspace_gram(J, e, V)
    assert value is not None and value is not Ellipsis, f"g_subspace_gram returned {value!r}"
    assert abs(float(np.asarray(value)) - 0.75) <= 1e-10, (
        f"for this V, (n sum_i e_i^2 |Z_i|^2 - |Z^T e|^2) / (|e|^2 |Z|_F^2) = "
        f"(8 - 2) / 8 = 0.75; got {float(value):.12f}")
    # K = I: mu_iso = (n |e|^2 - |e|^2) n / (p |e|^2 n) = (n - 1) / p
    value = mu_isotropic_gram(J, e)
    assert value is not None and value is not Ellipsis, f"mu_isotropic_gram returned {value!r}"
    assert abs(float(np.asarray(value)) - (n - 1) / p) <= 1e-10, (
        f"K = J J^T = I (n = {n}, p = {p}): mu_iso = (n - 1) / p = {(n - 1) / p:.6f}; "
        f"got {float(value):.12f}. Hint: divide by p, the number of parameters")


@check("ex-ch3-gram-check", hidden=True, points=2)
def gram_hidden(mu_isotropic_gram, g_gram, g_subspace_gram):
    """Hidden: agreement with ng.NoiseGeometry; g(V) for one column is g(v)."""
    import numpy as np
    import torch
    import noisegeom as ng

    for name, f in [("mu_isotropic_gram", mu_isotropic_gram), ("g_gram", g_gram),
                    ("g_subspace_gram", g_subspace_gram)]:
        assert f is not None, f"{name} is not defined yet"
    rng = np.random.default_rng(77)
    n, p = 25, 60
    J = rng.standard_normal((n, p)) * np.geomspace(1, 0.1, p)
    e = rng.standard_normal(n) * np.linspace(0.5, 2, n)
    v = rng.standard_normal(p)
    V, _ = np.linalg.qr(rng.standard_normal((p, 4)))
    geo = ng.NoiseGeometry.square_loss(torch.as_tensor(J), torch.as_tensor(e))
    Jt, et = torch.as_tensor(J), torch.as_tensor(e)
    pairs = [("mu_isotropic_gram", mu_isotropic_gram(Jt, et), geo.mu_isotropic()),
             ("g_gram", g_gram(Jt, et, torch.as_tensor(v)), geo.g(torch.as_tensor(v))),
             ("g_subspace_gram", g_subspace_gram(Jt, et, torch.as_tensor(V)),
              geo.g_subspace(torch.as_tensor(V)))]
    for name, got, ref in pairs:
        assert got is not None and got is not Ellipsis, f"{name} returned {got!r}; expected a float"
        assert abs(float(np.asarray(got)) - ref) <= 1e-9 * abs(ref), (
            f"{name}: ng.NoiseGeometry gives {ref:.12f}, got {float(got):.12f}")
    u = v / np.linalg.norm(v)
    one = float(np.asarray(g_subspace_gram(Jt, et, torch.as_tensor(u[:, None]))))
    assert abs(one - geo.g(torch.as_tensor(v))) <= 1e-9 * abs(one), (
        "g(V) with the single column v/|v| must equal g(v)")


# --------------------------------------------------------------- ex-ch3-hutchinson

@check("ex-ch3-hutchinson", points=2)
def hutchinson_diagonal(frobenius2_hutchinson):
    """Public: a diagonal matrix is estimated exactly, one matvec per probe, a tuple back."""
    import numpy as np
    import torch

    assert frobenius2_hutchinson is not None, (
        "frobenius2_hutchinson is not defined yet: define a function "
        "frobenius2_hutchinson(matvec, p, num_probes, seed=0)")
    d = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, -0.25, 1.5], dtype=torch.float64)
    calls = []

    def matvec(z):
        z = torch.as_tensor(z, dtype=torch.float64)
        assert tuple(z.shape) == (7,), f"matvec expects a probe of shape (p,) = (7,), got {tuple(z.shape)}"
        calls.append(1)
        return d * z

    out = frobenius2_hutchinson(matvec, 7, 30, seed=4)
    assert out is not None and out is not Ellipsis, (
        f"frobenius2_hutchinson returned {out!r}; expected a tuple (estimate, standard_error)")
    assert len(out) == 2, f"expected a tuple (estimate, standard_error), got {out!r}"
    estimate, se = (float(np.asarray(x)) for x in out)
    assert len(calls) == 30, (
        f"num_probes = 30: matvec must be called once per probe, it was called {len(calls)} times")
    exact = float((d ** 2).sum())
    assert abs(estimate - exact) <= 1e-10 * exact and abs(se) <= 1e-10 * exact, (
        f"for a diagonal A and Rademacher probes (entries +1 or -1), |A z|^2 = sum_i "
        f"d_i^2 z_i^2 = ||A||_F^2 = {exact} exactly for every probe, so the estimate is "
        f"{exact} with standard error 0; got ({estimate:.6g}, {se:.3g}). Hint: Gaussian "
        f"probes are unbiased too but not exact here; use entries +-1")


@check("ex-ch3-hutchinson", points=2)
def hutchinson_dense(frobenius2_hutchinson):
    """Public: a dense matrix, against the exact mean and standard deviation of |Az|^2."""
    import math

    import numpy as np
    import torch

    assert frobenius2_hutchinson is not None, "frobenius2_hutchinson is not defined yet"
    gen = torch.Generator().manual_seed(12)
    p, m = 10, 4000
    M = torch.randn(p, p, dtype=torch.float64, generator=gen)
    A = (M + M.T) / 2
    out = frobenius2_hutchinson(lambda z: A @ torch.as_tensor(z, dtype=torch.float64), p, m, seed=0)
    assert out is not None and out is not Ellipsis, (
        f"frobenius2_hutchinson returned {out!r}; expected a tuple (estimate, standard_error)")
    estimate, se = (float(np.asarray(x)) for x in out)
    exact = float((A ** 2).sum())
    B = A @ A                                   # |A z|^2 = z^T B z
    sd = math.sqrt(2 * (float((B ** 2).sum()) - float((B.diagonal() ** 2).sum())))
    exact_se = sd / math.sqrt(m)
    assert abs(estimate - exact) <= 6 * exact_se, (
        f"||A||_F^2 = {exact:.4f}; with {m} Rademacher probes the estimate should lie "
        f"within 6 standard errors ({6 * exact_se:.4f}), got {estimate:.4f}. Hint: "
        f"average |A z|^2 over the probes (not z^T A z, which estimates Tr A)")
    assert abs(se - exact_se) <= 0.25 * exact_se, (
        f"the standard error of the mean of {m} samples |A z|^2 is their standard "
        f"deviation over sqrt({m}), here about {exact_se:.4f}; got {se:.4f}. Hint: "
        f"divide the sample standard deviation by sqrt(num_probes)")


@check("ex-ch3-hutchinson", hidden=True, points=1)
def hutchinson_hidden(frobenius2_hutchinson):
    """Hidden: the seed is used (same seed, same answer; another seed, another one)."""
    import numpy as np
    import torch

    assert frobenius2_hutchinson is not None, "frobenius2_hutchinson is not defined yet"
    A = torch.tensor([[2.0, 1.0, 0.0], [1.0, -1.0, 0.5], [0.0, 0.5, 3.0]], dtype=torch.float64)
    mv = lambda z: A @ torch.as_tensor(z, dtype=torch.float64)   # noqa: E731
    out = frobenius2_hutchinson(mv, 3, 5, seed=1)
    assert out is not None and out is not Ellipsis, (
        f"frobenius2_hutchinson returned {out!r}; expected a tuple (estimate, standard_error)")
    a = [float(np.asarray(x)) for x in out]
    b = [float(np.asarray(x)) for x in frobenius2_hutchinson(mv, 3, 5, seed=1)]
    assert a == b, f"the same seed must give the same estimate, got {a} and {b}"
    estimates = {round(float(np.asarray(frobenius2_hutchinson(mv, 3, 5, seed=s)[0])), 12)
                 for s in range(6)}
    assert len(estimates) > 1, "different seeds gave the same estimate: is the seed used?"
    est, se = (float(np.asarray(x)) for x in frobenius2_hutchinson(mv, 3, 2, seed=3))
    assert np.isfinite(est) and np.isfinite(se) and se >= 0, (
        f"num_probes = 2 must work (sample standard deviation with n - 1), got {est}, {se}")


# A plausible wrong answer per question (each must fail a public check).
WRONG_ANSWERS = {
    # g(V) without the factor n of the first term
    "ex-ch3-gram-check": '''\
def mu_isotropic_gram(J, e):
    """Isotropic baseline mu_iso from the Gram matrix K = J J^T (square loss).

    Parameters
    ----------
    J : torch.Tensor, shape (n, p)
        Jacobian, rows grad f_i.
    e : torch.Tensor, shape (n,)
        Residuals f(x_i) - y_i.

    Returns
    -------
    float
    """
    J, e = torch.as_tensor(J, dtype=torch.float64), torch.as_tensor(e, dtype=torch.float64)
    n, p = J.shape
    K = J @ J.T
    num = (n * (e ** 2 * K.diagonal()).sum() - e @ K @ e) * K.trace()
    return float(num / (p * (e @ e) * (K ** 2).sum()))


def g_gram(J, e, v):
    """Directional alignment g(v) from s = J v (square loss); any non-zero scale of v.

    Parameters
    ----------
    J : torch.Tensor, shape (n, p)
    e : torch.Tensor, shape (n,)
    v : torch.Tensor, shape (p,)
        A direction with J v != 0.

    Returns
    -------
    float
    """
    J, e = torch.as_tensor(J, dtype=torch.float64), torch.as_tensor(e, dtype=torch.float64)
    s = J @ torch.as_tensor(v, dtype=torch.float64)
    n = J.shape[0]
    return float((n * (e ** 2 * s ** 2).sum() - (e @ s) ** 2) / ((e @ e) * (s @ s)))


def g_subspace_gram(J, e, V):
    """Subspace alignment g(V) from Z = J V (square loss).

    Parameters
    ----------
    J : torch.Tensor, shape (n, p)
    e : torch.Tensor, shape (n,)
    V : torch.Tensor, shape (p, k)
        Orthonormal columns, with J V != 0.

    Returns
    -------
    float
    """
    J, e = torch.as_tensor(J, dtype=torch.float64), torch.as_tensor(e, dtype=torch.float64)
    Z = J @ torch.as_tensor(V, dtype=torch.float64)
    n = J.shape[0]
    num = (e ** 2 * (Z ** 2).sum(1)).sum() - ((Z.T @ e) ** 2).sum()
    return float(num / ((e @ e) * (Z ** 2).sum()))
''',
    # the standard deviation of one sample given as the standard error of the mean
    "ex-ch3-hutchinson": '''\
def frobenius2_hutchinson(matvec, p, num_probes, seed=0):
    """Hutchinson estimate of ||A||_F^2 from products A z with Rademacher z.

    Parameters
    ----------
    matvec : callable
        z -> A z for a float64 tensor z of shape (p,); A symmetric p x p.
    p : int
        The dimension.
    num_probes : int
        Number of probes (and of calls to matvec), at least 2.
    seed : int
        Seed of the probes.

    Returns
    -------
    (float, float)
        The estimate (mean of ||A z||^2) and its standard error.
    """
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_probes):
        z = torch.randint(0, 2, (p,), generator=gen).to(torch.float64) * 2 - 1
        Az = torch.as_tensor(np.asarray(matvec(z)), dtype=torch.float64)
        samples.append(float(Az @ Az))
    samples = torch.tensor(samples, dtype=torch.float64)
    return float(samples.mean()), float(samples.std())
''',
}
