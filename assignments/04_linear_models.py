"""Auto-checks of chapter 4, *Linear models*.

Checked exercises
-----------------
``ex-ch4-rademacher``
    ``population_sigma1(delta, kappa4)``: the population noise covariance for
    independent non-Gaussian coordinates. Compared with the exact Σ₁ obtained by
    enumerating every input of a discrete distribution (all 2^d sign vectors for
    Rademacher inputs, κ₄ = −2; all 3^d points of a three-point distribution with
    κ₄ = 1), with ``lt.population_geometry`` for Gaussian inputs (κ₄ = 0), and
    with μ = 1 − 1/d for Rademacher inputs.
``ex-ch4-zero-noise``
    ``zero_noise_direction(X, e)``: v₀ = X⁺(1/e). Checked by its defining
    properties (X v₀ = 1/e, v₀ in the row space of X), by g(v₀) = 0 with
    ``ng.directional_alignment``, against numpy's ``pinv``, and for the scaling
    e -> c e, v₀ -> v₀ / c.

Tolerances: float64, 1e-10 relative (1e-9 where a linear system is solved).
"""

from assignments.otter_checks import check

SETUP = """\
import numpy as np
import torch

import noisegeom as ng
from noisegeom.chapters import ch04_linear_models as lt
"""


# --------------------------------------------------------------- ex-ch4-rademacher

@check("ex-ch4-rademacher", points=2)
def sigma1_rademacher_enumerated(population_sigma1):
    """Public: Rademacher inputs (kappa4 = -2) against enumeration of all 2^d inputs."""
    import itertools

    import numpy as np
    import torch

    assert population_sigma1 is not None, (
        "population_sigma1 is not defined yet: define a function population_sigma1(delta, kappa4)")
    delta = torch.tensor([1.0, -0.5, 0.3, 0.8], dtype=torch.float64)
    d = 4
    # every sign vector is equally likely: the expectation is an exact average
    xs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)
    e = xs @ delta                                   # residuals (no label noise)
    grad = (e[:, None] * xs).mean(0)
    exact = (e[:, None, None] ** 2 * xs[:, :, None] * xs[:, None, :]).mean(0) - torch.outer(grad, grad)
    out = population_sigma1(delta.clone(), -2.0)
    assert out is not None and out is not Ellipsis, (
        f"population_sigma1 returned {out!r}; expected a ({d}, {d}) tensor")
    out = torch.as_tensor(np.asarray(out), dtype=torch.float64)
    assert tuple(out.shape) == (d, d), f"expected shape ({d}, {d}), got {tuple(out.shape)}"
    assert torch.allclose(out, exact, rtol=1e-10, atol=1e-12), (
        f"Rademacher inputs (kappa4 = -2), delta = {delta.tolist()}: averaging over all "
        f"{2 ** d} sign vectors gives Sigma_1 =\n{exact.numpy().round(4)}\ngot\n"
        f"{out.numpy().round(4)}. Hint: E[(delta.x)^2 x x^T] = |delta|^2 I + 2 delta "
        f"delta^T + kappa4 Diag(delta^2), and Sigma_1 subtracts grad L grad L^T = delta delta^T")
    mu = float(out.trace()) / (float(delta @ delta) * d)     # G = I
    assert abs(mu - (1 - 1 / d)) <= 1e-10, f"mu should be 1 - 1/d = {1 - 1 / d}, got {mu}"


@check("ex-ch4-rademacher", points=1)
def sigma1_gaussian(population_sigma1):
    """Public: kappa4 = 0 is the Gaussian theorem (lt.population_geometry with S = I)."""
    import numpy as np
    import torch
    from noisegeom.chapters import ch04_linear_models as lt

    assert population_sigma1 is not None, "population_sigma1 is not defined yet"
    delta = np.array([0.7, -1.2, 0.0, 2.0, 0.4])
    ref = lt.population_geometry(np.eye(5), delta)["Sigma1"]
    out = population_sigma1(torch.as_tensor(delta), 0.0)
    assert out is not None and out is not Ellipsis, (
        f"population_sigma1 returned {out!r}; expected a (5, 5) tensor")
    out = np.asarray(torch.as_tensor(np.asarray(out), dtype=torch.float64))
    assert out.shape == (5, 5), f"expected shape (5, 5), got {out.shape}"
    assert np.allclose(out, ref, rtol=1e-10, atol=1e-12), (
        f"kappa4 = 0 (Gaussian inputs, S = I): Theorem 4.1 gives Sigma_1 = 2L I + delta "
        f"delta^T =\n{ref.round(4)}\ngot\n{out.round(4)}")


@check("ex-ch4-rademacher", hidden=True, points=2)
def sigma1_three_point(population_sigma1):
    """Hidden: a three-point distribution with kappa4 = 1, enumerated exactly."""
    import itertools

    import numpy as np
    import torch

    assert population_sigma1 is not None, "population_sigma1 is not defined yet"
    # x_k in {-2, 0, 2} with probabilities 1/8, 3/4, 1/8: variance 1, E x^4 = 4
    values, probs = [-2.0, 0.0, 2.0], [0.125, 0.75, 0.125]
    delta = np.array([0.5, -1.5, 1.0])
    grad = np.zeros(3)
    second = np.zeros((3, 3))
    for idx in itertools.product(range(3), repeat=3):
        x = np.array([values[i] for i in idx])
        w = float(np.prod([probs[i] for i in idx]))
        e = x @ delta
        grad += w * e * x
        second += w * e ** 2 * np.outer(x, x)
    exact = second - np.outer(grad, grad)
    out = population_sigma1(torch.as_tensor(delta), 1.0)
    assert out is not None and out is not Ellipsis, f"population_sigma1 returned {out!r}"
    out = np.asarray(torch.as_tensor(np.asarray(out), dtype=torch.float64))
    assert np.allclose(out, exact, rtol=1e-10, atol=1e-12), (
        f"kappa4 = 1: expected\n{exact.round(4)}\ngot\n{out.round(4)}")
    assert np.allclose(out, out.T, atol=1e-14), "Sigma_1 must be symmetric"


# --------------------------------------------------------------- ex-ch4-zero-noise

@check("ex-ch4-zero-noise", points=2)
def zero_noise_properties(zero_noise_direction):
    """Public: X v0 = 1/e, v0 in the row space of X, and g(v0) = 0."""
    import numpy as np
    import torch
    import noisegeom as ng

    assert zero_noise_direction is not None, (
        "zero_noise_direction is not defined yet: define a function zero_noise_direction(X, e)")
    gen = torch.Generator().manual_seed(44)
    n, d = 6, 15
    X = torch.randn(n, d, dtype=torch.float64, generator=gen)
    e = torch.randn(n, dtype=torch.float64, generator=gen)
    v = zero_noise_direction(X.clone(), e.clone())
    assert v is not None and v is not Ellipsis, (
        f"zero_noise_direction returned {v!r}; expected a tensor of shape ({d},)")
    v = torch.as_tensor(np.asarray(v), dtype=torch.float64).reshape(-1)
    assert v.shape[0] == d, f"expected a vector with d = {d} entries, got {v.shape[0]}"
    target = 1 / e
    assert torch.allclose(X @ v, target, rtol=1e-9, atol=1e-9), (
        f"x_i . v0 must equal 1/e_i for every sample: expected {target.numpy().round(4)}, "
        f"got {(X @ v).numpy().round(4)}. Hint: apply the pseudo-inverse to the "
        f"reciprocals 1/e, not to e")
    # the minimum-norm solution lies in the row space of X: no null-space component
    in_rows = X.T @ torch.linalg.solve(X @ X.T, X @ v)
    assert torch.allclose(v, in_rows, rtol=1e-9, atol=1e-9), (
        f"v0 solves X v = 1/e but is not the shortest solution: it has a component "
        f"of norm {float((v - in_rows).norm()):.3g} in the null space of X. Hint: "
        f"X^+ (pseudo-inverse) gives the solution in the row space")
    g = ng.directional_alignment(X, e, v)
    assert abs(g) <= 1e-9, f"the noise along v0 must vanish, g(v0) = 0; got {g:.3g}"


@check("ex-ch4-zero-noise", hidden=True, points=2)
def zero_noise_hidden(zero_noise_direction):
    """Hidden: against numpy's pinv; e -> c e scales v0 by 1/c; square X."""
    import numpy as np
    import torch

    assert zero_noise_direction is not None, "zero_noise_direction is not defined yet"
    rng = np.random.default_rng(9)
    for n, d in [(4, 30), (5, 5)]:
        X = rng.standard_normal((n, d)) * np.geomspace(1, 0.2, d)
        e = rng.standard_normal(n)
        ref = np.linalg.pinv(X) @ (1 / e)
        v = zero_noise_direction(torch.as_tensor(X), torch.as_tensor(e))
        assert v is not None and v is not Ellipsis, f"zero_noise_direction returned {v!r}"
        v = np.asarray(torch.as_tensor(np.asarray(v), dtype=torch.float64)).reshape(-1)
        assert np.allclose(v, ref, rtol=1e-8, atol=1e-10), (
            f"n = {n}, d = {d}: expected pinv(X) @ (1/e) = {ref.round(4)}, got {v.round(4)}")
        v3 = np.asarray(torch.as_tensor(np.asarray(
            zero_noise_direction(torch.as_tensor(X), torch.as_tensor(-3.0 * e))),
            dtype=torch.float64)).reshape(-1)
        assert np.allclose(v3, -v / 3, rtol=1e-8, atol=1e-10), (
            "multiplying the residuals by c must divide v0 by c")


@check("ex-ch4-zero-noise", points=1)
def zero_noise_orthonormal_rows(zero_noise_direction):
    """Public: with orthonormal rows, v0 = X^T (1/e) exactly."""
    import numpy as np
    import torch

    assert zero_noise_direction is not None, "zero_noise_direction is not defined yet"
    Q, _ = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(2)))
    X = Q.T                                               # orthonormal rows: X^+ = X^T
    e = torch.tensor([0.5, -2.0, 4.0], dtype=torch.float64)
    v = zero_noise_direction(X, e)
    assert v is not None and v is not Ellipsis, (
        f"zero_noise_direction returned {v!r}; expected a tensor of shape (8,)")
    v = torch.as_tensor(np.asarray(v), dtype=torch.float64).reshape(-1)
    expected = X.T @ (1 / e)
    assert torch.allclose(v, expected, rtol=1e-10, atol=1e-12), (
        f"for orthonormal rows X^+ = X^T, so v0 = X^T (1/e) = {expected.numpy().round(4)}; "
        f"got {v.numpy().round(4)}")


# A plausible wrong answer per question (each must fail a public check).
WRONG_ANSWERS = {
    # the second moment E[e^2 x x^T]: grad L grad L^T is not subtracted
    "ex-ch4-rademacher": '''\
def population_sigma1(delta, kappa4):
    """Population Sigma_1 of the linear model for independent non-Gaussian inputs.

    Parameters
    ----------
    delta : torch.Tensor, shape (d,)
        theta - theta_star.
    kappa4 : float
        Excess kurtosis E x_k^4 - 3 of each coordinate (0 Gaussian, -2 Rademacher);
        the coordinates are independent, centred, of unit variance; no label noise.

    Returns
    -------
    torch.Tensor, shape (d, d)
        Sigma_1 = |delta|^2 I + delta delta^T + kappa4 Diag(delta^2).
    """
    delta = torch.as_tensor(delta, dtype=torch.float64)
    d = delta.shape[0]
    return ((delta @ delta) * torch.eye(d, dtype=torch.float64)
            + 2 * torch.outer(delta, delta) + kappa4 * torch.diag(delta ** 2))
''',
    # the pseudo-inverse applied to e instead of to its reciprocals 1/e
    "ex-ch4-zero-noise": '''\
def zero_noise_direction(X, e):
    """The direction v0 = X^+ (1/e) along which the per-sample gradients agree.

    Parameters
    ----------
    X : torch.Tensor, shape (n, d)
        Inputs as rows, of rank n (so n <= d).
    e : torch.Tensor, shape (n,)
        Residuals, all non-zero.

    Returns
    -------
    torch.Tensor, shape (d,)
        The minimum-norm solution of X v = 1/e.
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    e = torch.as_tensor(e, dtype=torch.float64)
    # v = X^T (X X^T)^{-1} (1/e): the minimum-norm solution, through the n x n Gram matrix
    return X.T @ torch.linalg.solve(X @ X.T, e)
''',
}
