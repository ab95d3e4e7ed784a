"""Auto-checks of chapter 7 (stability and escape).

Checked exercises:

``ex-ch7-flat-share``
    ``perron_escape(lams, eta, batch_size, mu)``: ρ and the Perron vector of the aligned
    map M = (I - ηΛ)² + (μη²/B) λλᵀ. Public: Mu = ρu with M built independently, u ≥ 0
    summing to one, and ρ against ``ng.stability.perron``; the formula
    u_k ∝ λ_k/(ρ - (1-ηλ_k)²) and the secular equation at an unstable point. Hidden:
    agreement with ``aligned_escape`` on a 50-direction power law, and the invariance
    (B, μ) -> (2B, 2μ).
``ex-ch7-enumeration``
    ``enumerated_map(X, eta, batch_size)``: the d²×d² matrix of
    W ↦ E_b[(I-ηH_b)W(I-ηH_b)]. Public: its action on a random non-symmetric W against
    an explicit average over all batches; its eigenvalues contain those of
    ``second_moment_operator``. Hidden: B = n gives GD's map P ⊗ P, and other sizes.

Tolerances: 1e-10 relative (matrices), 1e-8 (Perron quantities).
"""

from assignments.otter_checks import check

SETUP = """\
import itertools

import numpy as np
import torch

import noisegeom as ng
from noisegeom.chapters.ch07_stability_and_escape import aligned_escape, second_moment_operator
"""


@check("ex-ch7-flat-share", points=2)
def perron_escape_is_the_perron_pair(perron_escape):
    import numpy as np

    import noisegeom as ng

    assert perron_escape is not None, "perron_escape is not defined yet: run the cell that defines it"
    lam = np.array([2.0, 1.3, 0.7, 0.4, 0.1])
    eta, B, mu = 0.6, 3, 0.8
    out = perron_escape(lam, eta, B, mu)
    assert out is not None and out is not Ellipsis, (
        f"perron_escape returned {out!r}; expected a pair (rho, u) with u of length {lam.size}")
    assert len(out) == 2, f"perron_escape must return a pair (rho, u), got {len(out)} items"
    rho, u = out
    assert u is not None and u is not Ellipsis, f"u is {u!r}; expected an array of length {lam.size}"
    rho, u = float(rho), np.asarray(u, dtype=float).reshape(-1)
    assert u.shape == lam.shape, f"u has shape {u.shape}; expected {lam.shape}"
    M = np.diag((1 - eta * lam) ** 2) + mu * eta ** 2 / B * np.outer(lam, lam)
    rho_ref, u_ref = ng.stability.perron(M)
    assert abs(rho - rho_ref) < 1e-8 * rho_ref, (
        f"rho = {rho:.8g}, expected ρ(M) = {rho_ref:.8g} for M = (I - ηΛ)² + (μη²/B) λλᵀ "
        "(check the square on (1 - ηλ_k) and the η² in the noise term)")
    assert (u >= -1e-12).all() and abs(u.sum() - 1) < 1e-10, (
        f"the Perron vector must be non-negative and sum to 1; got sum {u.sum():.6g}, min {u.min():.3g}")
    err = np.abs(M @ u - rho * u).max() / np.abs(u).max()
    assert err < 1e-8, f"M u ≠ ρ u (relative error {err:.1e}): u is not the Perron vector of M"


@check("ex-ch7-flat-share", points=1)
def perron_escape_formula_when_unstable(perron_escape):
    import numpy as np

    assert perron_escape is not None, "perron_escape is not defined yet: run the cell that defines it"
    lam = np.arange(1, 21) ** -0.5
    eta, B, mu = 1.0, 1, 1.0
    out = perron_escape(lam, eta, B, mu)
    assert out is not None and out is not Ellipsis, f"perron_escape returned {out!r}; expected (rho, u)"
    rho, u = float(out[0]), np.asarray(out[1], dtype=float).reshape(-1)
    assert rho > 1, f"ηλ_1 = 1, B = 1, 20 directions: SGD is unstable, ρ must exceed 1, got {rho:.6g}"
    gap = rho - (1 - eta * lam) ** 2
    secular = mu * eta ** 2 / B * np.sum(lam ** 2 / gap)
    assert abs(secular - 1) < 1e-8, f"ρ must solve the secular equation (μη²/B) Σ λ_k²/(ρ - (1-ηλ_k)²) = 1; left side {secular:.8g}"
    formula = lam / gap
    formula /= formula.sum()
    err = np.abs(u - formula).max()
    assert err < 1e-8, (
        f"u differs from λ_k/(ρ - (1-ηλ_k)²) normalised to sum 1 by {err:.1e}; "
        "normalise u by its sum (not its Euclidean norm)")


@check("ex-ch7-flat-share", hidden=True, points=2)
def perron_escape_matches_aligned_escape(perron_escape):
    import numpy as np

    from noisegeom.chapters.ch07_stability_and_escape import aligned_escape

    assert perron_escape is not None, "perron_escape is not defined yet"
    for alpha, eta, B, mu in [(0.5, 1.0, 2, 1.0), (1.0, 0.5, 1, 0.7), (0.0, 0.05, 4, 1.3)]:
        lam = np.arange(1, 51) ** -alpha
        out = perron_escape(lam, eta, B, mu)
        assert out is not None and out is not Ellipsis, f"perron_escape returned {out!r}"
        rho, u = float(out[0]), np.asarray(out[1], dtype=float)
        ref = aligned_escape(lam, eta, B, mu)
        assert abs(rho - ref["rho"]) < 1e-8 * ref["rho"], f"alpha={alpha}: rho {rho} vs {ref['rho']}"
        if ref["rho"] > 1:
            assert np.abs(u - ref["perron"]).max() < 1e-7, f"alpha={alpha}: Perron vector differs"
        rho2 = float(perron_escape(lam, eta, 2 * B, 2 * mu)[0])
        assert abs(rho2 - rho) < 1e-10 * rho, "only μ/B enters the map: (B, μ) -> (2B, 2μ) must not change ρ"


@check("ex-ch7-enumeration", points=2)
def enumerated_map_acts_like_the_average(enumerated_map):
    import itertools

    import numpy as np

    assert enumerated_map is not None, "enumerated_map is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(71)
    n, d, B, eta = 6, 3, 2, 0.4
    X = rng.standard_normal((n, d))
    T = enumerated_map(X, eta, B)
    assert T is not None and T is not Ellipsis, f"enumerated_map returned {T!r}; expected a ({d * d}, {d * d}) array"
    T = np.asarray(T, dtype=float)
    assert T.shape == (d * d, d * d), f"enumerated_map returned shape {T.shape}; expected ({d * d}, {d * d})"
    W = rng.standard_normal((d, d))                       # not symmetric on purpose
    expected = np.zeros((d, d))
    batches = list(itertools.combinations(range(n), B))
    for b in batches:
        P = np.eye(d) - eta * X[list(b)].T @ X[list(b)] / B
        expected += P @ W @ P / len(batches)
    got = (T @ W.reshape(-1)).reshape(d, d)
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < 1e-10, (
        f"applied to a random non-symmetric W, your matrix differs from E_b[(I-ηH_b)W(I-ηH_b)] "
        f"by {err:.1e} (relative). H_b is the batch MEAN (1/B) Σ_(i∈b) x_i x_iᵀ, the expectation averages "
        f"over all C({n}, {B}) = {len(batches)} batches, and (I-ηH_b)W(I-ηH_b) must not be expanded "
        "with (H_bW)ᵀ in place of WH_b")


@check("ex-ch7-enumeration", points=1)
def enumerated_map_contains_the_operator(enumerated_map):
    import numpy as np

    from noisegeom.chapters.ch07_stability_and_escape import second_moment_operator

    assert enumerated_map is not None, "enumerated_map is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(72)
    X = rng.standard_normal((5, 3))
    T = enumerated_map(X, 0.3, 3)
    assert T is not None and T is not Ellipsis, f"enumerated_map returned {T!r}; expected a (9, 9) array"
    eig_full = np.linalg.eigvals(np.asarray(T, dtype=float))
    eig_sym = np.linalg.eigvalsh(second_moment_operator(X, 0.3, 3).matrix)
    dist = max(np.abs(eig_full - v).min() for v in eig_sym)
    assert dist < 1e-8, (
        f"every eigenvalue of second_moment_operator(X, 0.3, 3) (on symmetric matrices) must be an "
        f"eigenvalue of your map; the worst is {dist:.1e} away")


@check("ex-ch7-enumeration", hidden=True, points=2)
def enumerated_map_full_batch_and_sizes(enumerated_map):
    import itertools

    import numpy as np

    assert enumerated_map is not None, "enumerated_map is not defined yet"
    rng = np.random.default_rng(73)
    X = rng.standard_normal((4, 2))
    T = enumerated_map(X, 0.2, 4)
    assert T is not None and T is not Ellipsis, f"enumerated_map returned {T!r}; expected a (4, 4) array"
    T = np.asarray(T, dtype=float)
    P = np.eye(2) - 0.2 * X.T @ X / 4
    assert np.allclose(T, np.kron(P, P), rtol=0, atol=1e-12), "B = n must give GD's map P ⊗ P"
    X = rng.standard_normal((7, 2))
    T = np.asarray(enumerated_map(X, 0.5, 1), dtype=float)
    W = rng.standard_normal((2, 2))
    ref = sum((np.eye(2) - 0.5 * np.outer(x, x)) @ W @ (np.eye(2) - 0.5 * np.outer(x, x)) for x in X) / 7
    assert np.allclose((T @ W.reshape(-1)).reshape(2, 2), ref, atol=1e-12), "B = 1, n = 7: wrong action"


WRONG_ANSWERS = {
    "ex-ch7-flat-share": '''\
def perron_escape(lams, eta, batch_size, mu):
    """Spectral radius and Perron vector, with (1 - ηλ_k) not squared."""
    lam = np.asarray(lams, dtype=float)
    M = np.diag(1 - eta * lam) + mu * eta ** 2 / batch_size * np.outer(lam, lam)
    vals, vecs = np.linalg.eigh(M)
    u = np.abs(vecs[:, -1])
    return float(vals[-1]), u / u.sum()
''',
    "ex-ch7-enumeration": '''\
def enumerated_map(X, eta, batch_size):
    """The second-moment map by enumeration, with the batch SUM in place of its mean."""
    X = np.asarray(X, dtype=float)
    n, d = X.shape
    batches = list(itertools.combinations(range(n), batch_size))
    T = np.zeros((d * d, d * d))
    for b in batches:
        P = np.eye(d) - eta * X[list(b)].T @ X[list(b)]
        T += np.kron(P, P)
    return T / len(batches)
''',
}
