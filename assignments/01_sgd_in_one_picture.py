"""Auto-checks of chapter 1, *SGD in one picture*.

Checked exercises
-----------------
``ex-noise-vector``
    ``noise_vector(theta, X, y, batch)``: the gradient noise of least squares for
    one minibatch. Compared, on fresh random data, with the per-sample gradients of
    ``ng.per_sample_gradients`` (automatic differentiation, an independent route);
    the average over all batches must vanish (unbiasedness), repeated indices must
    count twice, the whole data set and an interpolating point give zero noise.
``ex-batch-size``
    ``one_sample_power(grads)`` (exact, compared with an explicit loop) and
    ``noise_power(grads, batch_size, num_batches, seed)`` (Monte Carlo, compared
    with the exact E||xi||^2 obtained by enumerating every batch, within six
    standard errors of the estimate, also computed by enumeration; B = n gives 0).

Tolerances: float64, 1e-10 relative for exact quantities; six standard errors for
Monte-Carlo estimates (a correct estimate fails with probability about 1e-9).
"""

from assignments.otter_checks import check

SETUP = """\
import itertools

import numpy as np
import torch

import noisegeom as ng
"""


# ----------------------------------------------------------------- ex-noise-vector

@check("ex-noise-vector", points=2)
def noise_vector_matches_autodiff(noise_vector):
    """Public: xi for several batches against automatic differentiation."""
    import numpy as np
    import torch
    import noisegeom as ng

    assert noise_vector is not None, (
        "noise_vector is not defined yet: define a function noise_vector(theta, X, y, batch)")
    gen = torch.Generator().manual_seed(31)
    n, p = 9, 3
    X = torch.randn(n, p, dtype=torch.float64, generator=gen)
    y = torch.randn(n, dtype=torch.float64, generator=gen)
    theta = torch.randn(p, dtype=torch.float64, generator=gen)
    grads = ng.per_sample_gradients(ng.linear_model(p), theta, X, y)   # g_i = e_i x_i
    for batch in ([0, 4], [1, 2, 3, 7], [8]):
        out = noise_vector(theta.clone(), X.clone(), y.clone(), batch)
        assert out is not None and out is not Ellipsis, (
            f"noise_vector returned {out!r}; expected a tensor of shape ({p},)")
        out = torch.as_tensor(np.asarray(out), dtype=torch.float64)
        assert tuple(out.shape) == (p,), (
            f"expected shape ({p},) (one entry per parameter), got {tuple(out.shape)}")
        expected = grads[batch].mean(0) - grads.mean(0)
        if torch.allclose(out, -expected, rtol=1e-10, atol=1e-12):
            raise AssertionError(
                f"batch {batch}: got exactly minus the expected noise {expected.numpy()}. "
                f"Hint: the residual is e_i = x_i . theta - y_i (prediction minus label)")
        assert torch.allclose(out, expected, rtol=1e-10, atol=1e-12), (
            f"batch {batch}: expected xi = {expected.numpy().round(6)}, got "
            f"{out.numpy().round(6)}. Hint: g_b averages g_i = e_i x_i over the batch "
            f"(divide by B = len(batch)), grad L averages over all n samples")


@check("ex-noise-vector", points=1)
def noise_vector_unbiased(noise_vector):
    """Public: the average over all batches is 0; B = n and interpolation give 0."""
    import itertools

    import numpy as np
    import torch

    assert noise_vector is not None, "noise_vector is not defined yet"
    rng = np.random.default_rng(4)
    n, p = 6, 2
    X = torch.as_tensor(rng.standard_normal((n, p)))
    y = torch.as_tensor(rng.standard_normal(n))
    theta = torch.as_tensor(rng.standard_normal(p))

    def as_vector(out):
        assert out is not None and out is not Ellipsis, (
            f"noise_vector returned {out!r}; expected a tensor of shape ({p},)")
        return torch.as_tensor(np.asarray(out), dtype=torch.float64).reshape(-1)

    xis = torch.stack([as_vector(noise_vector(theta, X, y, list(b)))
                       for b in itertools.combinations(range(n), 2)])
    assert float(xis.mean(0).abs().max()) <= 1e-12, (
        f"the average of xi over all {len(xis)} batches of size 2 must vanish "
        f"(the minibatch gradient is unbiased), got {xis.mean(0).numpy()}")
    whole = as_vector(noise_vector(theta, X, y, list(range(n))))
    assert float(whole.abs().max()) <= 1e-12, (
        f"the batch of all n samples has g_b = grad L, so xi = 0; got {whole.numpy()}")
    y_star = X @ torch.tensor([1.0, -2.0], dtype=torch.float64)
    at_min = as_vector(noise_vector(torch.tensor([1.0, -2.0], dtype=torch.float64), X, y_star, [0, 3]))
    assert float(at_min.abs().max()) <= 1e-12, (
        f"at an interpolating point every residual is 0, so xi = 0; got {at_min.numpy()}")


@check("ex-noise-vector", hidden=True, points=2)
def noise_vector_hidden(noise_vector):
    """Hidden: repeated indices, numpy inputs, a wider problem."""
    import numpy as np
    import torch

    assert noise_vector is not None, "noise_vector is not defined yet"
    rng = np.random.default_rng(123)
    n, p = 12, 5
    X = rng.standard_normal((n, p))
    y = rng.standard_normal(n)
    theta = rng.standard_normal(p)
    g = (X @ theta - y)[:, None] * X
    for batch in ([2, 2, 5], [0, 0, 0, 0], [11, 3, 3, 7, 1]):
        out = noise_vector(torch.as_tensor(theta), torch.as_tensor(X), torch.as_tensor(y), batch)
        assert out is not None and out is not Ellipsis, f"noise_vector returned {out!r}"
        out = np.asarray(torch.as_tensor(np.asarray(out), dtype=torch.float64)).reshape(-1)
        expected = g[batch].mean(0) - g.mean(0)
        assert np.allclose(out, expected, rtol=1e-10, atol=1e-12), (
            f"batch {batch} (repeated indices count as often as they appear): expected "
            f"{expected.round(6)}, got {out.round(6)}")


# ------------------------------------------------------------------- ex-batch-size

@check("ex-batch-size", points=1)
def one_sample_power_exact(one_sample_power):
    """Public: E||xi_1||^2 against an explicit loop."""
    import numpy as np
    import torch

    assert one_sample_power is not None, (
        "one_sample_power is not defined yet: define a function one_sample_power(grads)")
    rng = np.random.default_rng(8)
    grads = rng.standard_normal((10, 3)) * [2.0, 1.0, 0.5] + [1.0, -3.0, 0.2]
    mean = grads.mean(0)
    expected = sum(float((g - mean) @ (g - mean)) for g in grads) / len(grads)
    out = one_sample_power(torch.as_tensor(grads))
    assert out is not None and out is not Ellipsis, (
        f"one_sample_power returned {out!r}; expected a float")
    out = float(out)
    assert abs(out - expected) <= 1e-10 * expected, (
        f"expected (1/n) sum_i ||g_i - grad L||^2 = {expected:.6f}, got {out:.6f}. "
        f"Hint: subtract the mean gradient before squaring, and divide by n (not n - 1)")


@check("ex-batch-size", points=2)
def noise_power_monte_carlo(noise_power):
    """Public: the estimate agrees with the exact value within six standard errors."""
    import itertools
    import math

    import numpy as np
    import torch

    assert noise_power is not None, (
        "noise_power is not defined yet: define a function "
        "noise_power(grads, batch_size, num_batches, seed=0)")
    rng = np.random.default_rng(17)
    n, p = 8, 2
    grads = torch.as_tensor(rng.standard_normal((n, p)) + [0.5, -1.0])
    mean = grads.mean(0)
    for B in (1, 3, 6):
        # exact mean and spread of ||xi||^2 by enumerating every B-subset
        sq = torch.stack([((grads[list(b)].mean(0) - mean) ** 2).sum()
                          for b in itertools.combinations(range(n), B)])
        exact, spread = float(sq.mean()), float(sq.std(unbiased=False))
        M = 20_000
        out = noise_power(grads, B, M, seed=5)
        assert out is not None and out is not Ellipsis, (
            f"noise_power returned {out!r}; expected a float")
        out = float(out)
        tol = 6 * spread / math.sqrt(M)
        assert abs(out - exact) <= tol, (
            f"B = {B}, n = {n}, {M} minibatches without replacement: E||xi||^2 = "
            f"{exact:.5f} exactly, got {out:.5f} (allowed: +/- {tol:.5f}, six standard "
            f"errors). Hint: xi = g_b - grad L; subtract the full gradient "
            f"grads.mean(0), and average ||xi||^2 over the minibatches")


@check("ex-batch-size", hidden=True, points=2)
def noise_power_hidden(one_sample_power, noise_power):
    """Hidden: B = n gives 0 exactly; B = 1 matches one_sample_power; the 1/B law."""
    import math

    import numpy as np
    import torch

    assert one_sample_power is not None and noise_power is not None, (
        "one_sample_power and noise_power must both be defined")
    rng = np.random.default_rng(2)
    n, p = 12, 3
    grads = torch.as_tensor(rng.standard_normal((n, p)))
    full = noise_power(grads, n, 50, seed=1)
    assert full is not None and abs(float(full)) <= 1e-20, (
        f"B = n without replacement: every batch is the data set, xi = 0; got {full}")
    one = float(one_sample_power(grads))
    M = 40_000
    for B in (1, 4):
        exact = (n - B) / (B * (n - 1)) * one
        out = float(noise_power(grads, B, M, seed=B))
        # ||xi||^2 <= max_i ||g_i - mean||^2, so its standard deviation is below that
        bound = float(((grads - grads.mean(0)) ** 2).sum(1).max())
        assert abs(out - exact) <= 6 * bound / math.sqrt(M), (
            f"B = {B}: expected about {exact:.5f} = (n - B) / (B (n - 1)) "
            f"E||xi_1||^2, got {out:.5f}")


# A plausible wrong answer per question (each must fail a public check).
WRONG_ANSWERS = {
    # the batch sum divided by n instead of by B
    "ex-noise-vector": '''\
def noise_vector(theta, X, y, batch):
    """Gradient noise g_b(theta) - grad L(theta) of the least-squares loss.

    Parameters
    ----------
    theta : torch.Tensor, shape (p,)
        The parameters.
    X : torch.Tensor, shape (n, p)
        The inputs x_i as rows.
    y : torch.Tensor, shape (n,)
        The labels.
    batch : list of int
        The B indices of the minibatch (repeats allowed).

    Returns
    -------
    torch.Tensor, shape (p,)
        xi = (1/B) sum_{i in b} g_i - (1/n) sum_i g_i with g_i = (x_i . theta - y_i) x_i.
    """
    theta, X, y = (torch.as_tensor(a, dtype=torch.float64) for a in (theta, X, y))
    grads = (X @ theta - y)[:, None] * X          # rows g_i = e_i x_i
    return grads[list(batch)].sum(0) / len(grads) - grads.mean(0)
''',
    # the second moment of g_b instead of its noise: the full gradient is not subtracted
    "ex-batch-size": '''\
def one_sample_power(grads):
    """E||xi_1||^2 = (1/n) sum_i ||g_i - grad L||^2, exactly.

    Parameters
    ----------
    grads : torch.Tensor, shape (n, p)
        The per-sample gradients g_i as rows.

    Returns
    -------
    float
    """
    grads = torch.as_tensor(grads, dtype=torch.float64)
    return float(((grads - grads.mean(0)) ** 2).sum(1).mean())


def noise_power(grads, batch_size, num_batches, seed=0):
    """Monte-Carlo estimate of E||xi||^2 for minibatches without replacement.

    Parameters
    ----------
    grads : torch.Tensor, shape (n, p)
        The per-sample gradients g_i as rows.
    batch_size : int
        B, between 1 and n.
    num_batches : int
        How many minibatches to average over.
    seed : int
        Seed of the minibatch draws.

    Returns
    -------
    float
        The average of ||g_b - grad L||^2 over the drawn minibatches.
    """
    grads = torch.as_tensor(grads, dtype=torch.float64)
    xi = ng.minibatch_gradients(grads, batch_size, num_batches, seed=seed)
    return float((xi ** 2).sum(1).mean())
''',
}
