"""Auto-checks of chapter 8 (cyclical learning rates).

Checked exercises:

``ex-ch8-monotone``
    ``resting_rate(lams, batch_size, mu)``: the resting threshold η_c. Public: η_c = 2/3
    for λ = (1, 1), μ = B = 1; on a random spectrum with a zero eigenvalue,
    ρ(M(η_c)) = 1 on the curved directions, computed independently with ``eigvalsh``,
    and s(η_c) = 1. Hidden: agreement with ``resting_threshold`` for other spectra,
    batch sizes and μ, and that only μ/B matters.
``ex-ch8-period``
    ``cycle_rate(lams, etas, batch_size, mu)``: ρ(Π)^{1/P}. Public: a constant
    schedule gives ρ(M(η)) (eigvalsh of M on λ_k > 0, with a zero eigenvalue present);
    a two-step schedule against the product computed here; the two lower bounds of
    ``prop-cycle``. Hidden: agreement with ``cycle_growth`` for cosine and triangular
    schedules, invariance under a cyclic shift of the schedule.

Tolerances: relative 1e-9 (threshold), 1e-9 (growth rates).
"""

from assignments.otter_checks import check

SETUP = """\
import numpy as np
import torch

import noisegeom as ng
from noisegeom.chapters.ch08_cyclical_learning_rates import cycle_growth, cyclical_schedule, resting_threshold
"""


@check("ex-ch8-monotone", points=1)
def resting_rate_two_equal_eigenvalues(resting_rate):
    import numpy as np

    assert resting_rate is not None, "resting_rate is not defined yet: run the cell that defines it"
    eta_c = resting_rate(np.array([1.0, 1.0]), 1, 1.0)
    assert eta_c is not None and eta_c is not Ellipsis, f"resting_rate returned {eta_c!r}; expected a float"
    eta_c = float(eta_c)
    assert abs(eta_c - 2 / 3) < 1e-9, (
        f"for λ = (1, 1), μ = B = 1, s(η) = 2η/(2 - η) = 1 at η_c = 2/3; resting_rate returned {eta_c:.10g}. "
        "s(η) = (μη/B) Σ_k λ_k/(2 - ηλ_k): is the factor η in front there?")


@check("ex-ch8-monotone", points=2)
def resting_rate_is_where_rho_is_one(resting_rate):
    import numpy as np

    assert resting_rate is not None, "resting_rate is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(81)
    lam = np.r_[np.sort(rng.uniform(0.05, 3.0, 9))[::-1], 0.0]      # one null direction
    B, mu = 2, 0.7
    eta_c = resting_rate(lam, B, mu)
    assert eta_c is not None and eta_c is not Ellipsis, f"resting_rate returned {eta_c!r}; expected a float"
    eta_c = float(eta_c)
    assert 0 < eta_c < 2 / lam.max(), f"η_c must lie in (0, 2/λ_1) = (0, {2 / lam.max():.4g}); got {eta_c:.6g}"
    lp = lam[lam > 0]
    M = np.diag((1 - eta_c * lp) ** 2) + mu * eta_c ** 2 / B * np.outer(lp, lp)
    rho = np.linalg.eigvalsh(M)[-1]
    assert abs(rho - 1) < 1e-9, (
        f"at η_c the second-moment map on the curved directions must have ρ = 1; got ρ(M(η_c)) = {rho:.12f} "
        f"at η_c = {eta_c:.10g} (bisect until the interval is below 1e-12 relative, and drop λ_k = 0)")


@check("ex-ch8-monotone", hidden=True, points=2)
def resting_rate_matches_package(resting_rate):
    import numpy as np

    from noisegeom.chapters.ch08_cyclical_learning_rates import resting_threshold

    assert resting_rate is not None, "resting_rate is not defined yet"
    for alpha, B, mu in [(0.0, 1, 1.0), (1.0, 4, 0.5), (0.5, 16, 2.0)]:
        lam = np.r_[np.arange(1, 31) ** -alpha, 0.0, 0.0]
        ref = resting_threshold(lam, B, mu)
        got = resting_rate(lam, B, mu)
        assert got is not None and got is not Ellipsis, f"resting_rate returned {got!r}"
        assert abs(float(got) - ref) < 1e-9 * ref, f"alpha={alpha}, B={B}, mu={mu}: {float(got)!r} vs {ref!r}"
        twice = float(resting_rate(lam, 2 * B, 2 * mu))
        assert abs(twice - ref) < 1e-9 * ref, "only μ/B enters: (B, μ) -> (2B, 2μ) must not change η_c"


@check("ex-ch8-period", points=2)
def cycle_rate_constant_and_two_step(cycle_rate):
    import numpy as np

    assert cycle_rate is not None, "cycle_rate is not defined yet: run the cell that defines it"
    lam = np.array([1.5, 0.8, 0.3, 0.0])                   # the zero is a null direction
    B, mu = 1, 0.9

    def M(eta):
        lp = lam[lam > 0]
        return np.diag((1 - eta * lp) ** 2) + mu * eta ** 2 / B * np.outer(lp, lp)

    got = cycle_rate(lam, [0.5], B, mu)
    assert got is not None and got is not Ellipsis, f"cycle_rate returned {got!r}; expected a float"
    got, ref = float(got), np.linalg.eigvalsh(M(0.5))[-1]
    assert abs(got - ref) < 1e-9 * ref, (
        f"a constant schedule must give ρ(M(η)) = {ref:.10g}; got {got:.10g}. "
        + ("(ρ = 1 exactly: did you keep the λ_k = 0 direction, where M acts as the identity?)"
           if abs(got - 1) < 1e-12 else ""))
    etas = [0.2, 0.9, 0.6]
    Pi = M(0.6) @ M(0.9) @ M(0.2)
    ref3 = np.abs(np.linalg.eigvals(Pi)).max() ** (1 / 3)
    got3 = float(cycle_rate(lam, etas, B, mu))
    assert abs(got3 - ref3) < 1e-9 * ref3, (
        f"for the schedule {etas}, ρ(M(0.6) M(0.9) M(0.2))^(1/3) = {ref3:.10g}; got {got3:.10g}"
        + (f" (that is ρ(Π) = {ref3 ** 3:.6g} without the 1/P-th root)" if abs(got3 - ref3 ** 3) < 1e-6 else ""))


@check("ex-ch8-period", points=1)
def cycle_rate_respects_the_bounds(cycle_rate):
    import numpy as np

    assert cycle_rate is not None, "cycle_rate is not defined yet: run the cell that defines it"
    lam = np.arange(1, 11) ** -0.5
    B, mu = 2, 1.0
    etas = 0.2 + 1.6 * np.abs(np.sin(np.linspace(0, np.pi, 12)))
    got = cycle_rate(lam, etas, B, mu)
    assert got is not None and got is not Ellipsis, f"cycle_rate returned {got!r}; expected a float"
    got = float(got)
    eta_g = np.exp(np.log(etas).mean())
    frob = mu * eta_g ** 2 / B * (lam ** 2).sum()
    gd = max(np.prod(np.abs(1 - etas * l) ** (2 / len(etas))) for l in lam)
    assert got >= frob * (1 - 1e-12) and got >= gd * (1 - 1e-12), (
        f"growth per step {got:.6g} violates prop-cycle: it must be ≥ μη_g²‖H‖_F²/B = {frob:.6g} "
        f"and ≥ max_k Π_t |1-η_tλ_k|^(2/P) = {gd:.6g}")


@check("ex-ch8-period", hidden=True, points=2)
def cycle_rate_matches_package(cycle_rate):
    import numpy as np

    from noisegeom.chapters.ch08_cyclical_learning_rates import cycle_growth, cyclical_schedule

    assert cycle_rate is not None, "cycle_rate is not defined yet"
    lam = np.r_[np.arange(1, 21) ** -0.7, 0.0]
    for shape, P, hi in [("cosine", 40, 1.0), ("triangular", 25, 1.8), ("cosine", 7, 0.4)]:
        etas = cyclical_schedule(shape, P, 0.3, hi, P)
        got = cycle_rate(lam, etas, 1, 0.8)
        assert got is not None and got is not Ellipsis, f"cycle_rate returned {got!r}"
        ref = cycle_growth(lam, etas, 1, 0.8)
        assert abs(float(got) - ref) < 1e-9 * ref, f"{shape}, P={P}: {float(got)!r} vs cycle_growth {ref!r}"
        shifted = float(cycle_rate(lam, np.roll(etas, 3), 1, 0.8))
        assert abs(shifted - ref) < 1e-9 * ref, "a cyclic shift of the schedule must not change the growth"


WRONG_ANSWERS = {
    "ex-ch8-monotone": '''\
def resting_rate(lams, batch_size, mu):
    """η_c by bisection, with s(η) missing its factor η."""
    lam = np.asarray(lams, dtype=float)
    lam = lam[lam > 0]

    def s(eta):
        return mu / batch_size * np.sum(lam / (2 - eta * lam))

    lo, hi = 0.0, 2.0 / lam.max()
    while hi - lo > 1e-13 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if s(mid) <= 1 else (lo, mid)
    return lo
''',
    "ex-ch8-period": '''\
def cycle_rate(lams, etas, batch_size, mu):
    """Growth over one period, without the 1/P-th root."""
    lam = np.asarray(lams, dtype=float)
    lam = lam[lam > 0]
    Pi = np.eye(lam.size)
    for eta in np.atleast_1d(np.asarray(etas, dtype=float)):
        Pi = (np.diag((1 - eta * lam) ** 2)
              + mu * eta ** 2 / batch_size * np.outer(lam, lam)) @ Pi
    return float(np.abs(np.linalg.eigvals(Pi)).max())
''',
}
