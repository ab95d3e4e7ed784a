"""Auto-checks of chapter 2, *The covariance of minibatch noise*.

Checked exercises
-----------------
``ex-ch2-enumerate``
    ``enumerated_covariance(grads, batch_size, replacement)``: the exact covariance
    of the minibatch noise by enumeration. Compared, on fresh random per-sample
    gradients, with the closed form c(n, B) Σ₁ computed inside the check (Σ₁ by an
    explicit loop over samples) and with ``ng.noise_covariance``; plus the cases
    B = 1 (both samplers give Σ₁) and B = n without replacement (zero noise).
``ex-ch2-directions``
    ``directions_needed(sigma, G, share)``: the smallest k whose top-k eigenvectors
    of G carry ``share`` of Tr Σ. Compared with an independent computation
    (numpy's ``eigh`` and an explicit loop over k), on matrices with known answers
    (Σ along the top or the bottom eigenvector of G) and under invariances
    (a common rotation, positive scalings, numpy inputs).
``ex-ch2-fourth``
    ``fourth_moment(grads, batch_size)``: E||xi||^4 with replacement from the
    formula of part (a). Compared with the exact average of ||xi||^4 over all
    n**B ordered index tuples (B = 1, where it is m4, and larger B; p > n too).

Tolerances: float64 throughout, matrices agree to 1e-10 relative to their size.
"""

from assignments.otter_checks import check

SETUP = """\
import itertools
import math

import numpy as np
import torch

import noisegeom as ng
from noisegeom import two_layer_task
"""


# ---------------------------------------------------------------- ex-ch2-enumerate

@check("ex-ch2-enumerate", points=2)
def enumerate_matches_formula(enumerated_covariance):
    """Public: both samplers on n = 5, p = 3, B = 2 against c(n, B) Sigma_1."""
    import numpy as np
    import torch

    assert enumerated_covariance is not None, (
        "enumerated_covariance is not defined yet: define a function "
        "enumerated_covariance(grads, batch_size, replacement)")
    gen = torch.Generator().manual_seed(2024)
    grads = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    n, B = 5, 2
    mean = grads.mean(0)
    # Sigma_1 by an explicit loop: an independent route from the student's code
    sigma1 = sum(torch.outer(g - mean, g - mean) for g in grads) / n
    for replacement, c, hint in [
            (True, 1 / B, "with replacement, every one of the n**B ordered tuples "
                          "(itertools.product) is equally likely; "
                          "combinations_with_replacement lists each multiset only once "
                          "although they are not equally likely"),
            (False, (n - B) / (B * (n - 1)), "without replacement, the batches are the "
                                             "binomial(n, B) subsets (itertools.combinations)")]:
        out = enumerated_covariance(grads.clone(), B, replacement)
        assert out is not None and out is not Ellipsis, (
            f"enumerated_covariance(grads, {B}, replacement={replacement}) returned "
            f"{out!r}; expected a ({grads.shape[1]}, {grads.shape[1]}) tensor")
        out = torch.as_tensor(np.asarray(out), dtype=torch.float64)
        assert tuple(out.shape) == (3, 3), (
            f"expected a (p, p) = (3, 3) matrix for grads of shape (5, 3), got shape "
            f"{tuple(out.shape)}: the covariance is the average of xi xi^T, "
            f"xi.T @ xi for noise vectors xi as rows")
        expected = c * sigma1
        err = float((out - expected).abs().max())
        assert err <= 1e-10 * float(expected.abs().max()), (
            f"replacement={replacement}, n = {n}, B = {B}: expected c(n, B) Sigma_1 with "
            f"c = {c:.4f}, i.e.\n{expected.numpy().round(5)}\ngot\n{out.numpy().round(5)}\n"
            f"(largest difference {err:.3g}). Hint: {hint}; subtract the full mean "
            f"gradient from each batch gradient and divide by the number of batches")


@check("ex-ch2-enumerate", points=1)
def enumerate_edge_cases(enumerated_covariance):
    """Public: B = 1 gives Sigma_1 for both samplers; B = n without replacement gives 0."""
    import numpy as np
    import torch

    assert enumerated_covariance is not None, "enumerated_covariance is not defined yet"
    gen = torch.Generator().manual_seed(7)
    grads = torch.randn(4, 2, dtype=torch.float64, generator=gen)
    centred = grads - grads.mean(0)
    sigma1 = centred.T @ centred / 4
    for replacement in (True, False):
        out = enumerated_covariance(grads, 1, replacement)
        assert out is not None and out is not Ellipsis, (
            f"enumerated_covariance returned {out!r}; expected a (2, 2) tensor")
        out = torch.as_tensor(np.asarray(out), dtype=torch.float64)
        assert tuple(out.shape) == (2, 2), f"expected shape (2, 2), got {tuple(out.shape)}"
        assert torch.allclose(out, sigma1, rtol=1e-10, atol=1e-12), (
            f"B = 1, replacement={replacement}: a batch is one uniformly drawn sample, "
            f"so the covariance must be Sigma_1 = (1/n) sum (g_i - mean)(g_i - mean)^T "
            f"(divide by n, not n - 1):\n{sigma1.numpy().round(5)}\ngot\n"
            f"{out.numpy().round(5)}")
    out = torch.as_tensor(np.asarray(enumerated_covariance(grads, 4, False)),
                          dtype=torch.float64)
    assert float(out.abs().max()) <= 1e-12, (
        f"B = n without replacement: the only batch is the whole data set, its gradient "
        f"is the full gradient and the noise is zero; got a largest entry "
        f"{float(out.abs().max()):.3g}")


@check("ex-ch2-enumerate", hidden=True, points=2)
def enumerate_hidden(enumerated_covariance):
    """Hidden: n = 6, p = 4, B = 3 and n = 5, B = 2 against ng.noise_covariance; symmetry."""
    import numpy as np
    import torch
    import noisegeom as ng

    assert enumerated_covariance is not None, "enumerated_covariance is not defined yet"
    rng = np.random.default_rng(99)
    grads_np = rng.standard_normal((6, 4)) * np.array([3.0, 1.0, 0.3, 0.1]) + 0.5
    grads = torch.as_tensor(grads_np)
    for replacement in (True, False):
        out = enumerated_covariance(grads, 3, replacement)
        assert out is not None and out is not Ellipsis, (
            f"enumerated_covariance returned {out!r}; expected a (4, 4) tensor")
        out = torch.as_tensor(np.asarray(out), dtype=torch.float64)
        ref = ng.noise_covariance(grads, batch_size=3, replacement=replacement)
        assert tuple(out.shape) == (4, 4), f"expected shape (4, 4), got {tuple(out.shape)}"
        assert torch.allclose(out, out.T, atol=1e-12), "a covariance must be symmetric"
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), (
            f"n = 6, B = 3, replacement={replacement}: differs from "
            f"ng.noise_covariance by {float((out - ref).abs().max()):.3g}")
    # a second instance, with a batch of two
    out = torch.as_tensor(np.asarray(enumerated_covariance(torch.as_tensor(grads_np[:5]), 2, False)),
                          dtype=torch.float64)
    ref = ng.noise_covariance(grads_np[:5], batch_size=2, replacement=False)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12), "n = 5, B = 2: wrong covariance"


# --------------------------------------------------------------- ex-ch2-directions

@check("ex-ch2-directions", points=2)
def directions_known_answers(directions_needed):
    """Public: Sigma along the top / bottom eigenvector of G needs 1 / p directions."""
    import numpy as np
    import torch

    assert directions_needed is not None, (
        "directions_needed is not defined yet: define a function "
        "directions_needed(sigma, G, share=0.9)")
    gen = torch.Generator().manual_seed(5)
    p = 6
    Q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64, generator=gen))
    values = torch.tensor([9.0, 5.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    G = (Q * values) @ Q.T
    top, bottom = Q[:, 0], Q[:, -1]
    k = directions_needed(torch.outer(top, top), G, 0.9)
    assert k is not None and k is not Ellipsis, (
        f"directions_needed returned {k!r}; expected an int between 1 and p")
    assert int(k) == 1, (
        f"sigma = u1 u1^T with u1 the eigenvector of G's LARGEST eigenvalue: its whole "
        f"trace sits on the top eigenvector, so k = 1; got {k}. Hint: torch.linalg.eigh "
        f"and np.linalg.eigh return eigenvalues in increasing order, sort them decreasing")
    k = directions_needed(torch.outer(bottom, bottom), G, 0.9)
    assert int(k) == p, (
        f"sigma = u u^T with u the eigenvector of G's SMALLEST eigenvalue: the top "
        f"{p - 1} eigenvectors carry nothing, so k = p = {p}; got {k}. Hint: order the "
        f"eigenvectors by decreasing eigenvalue")
    # isotropic sigma: k eigenvectors carry k/p of the trace whatever G is
    for share, expected in [(0.45, 3), (0.9, 6), (0.2, 2)]:
        k = directions_needed(torch.eye(p, dtype=torch.float64), G, share)
        assert int(k) == expected, (
            f"isotropic sigma = I (p = {p}), share = {share}: any k orthonormal "
            f"directions carry k/p of the trace, so k = ceil(share * p) = {expected}; got {k}")


@check("ex-ch2-directions", points=1)
def directions_random(directions_needed):
    """Public: random sigma and G against an explicit loop over k."""
    import numpy as np
    import torch

    assert directions_needed is not None, "directions_needed is not defined yet"
    rng = np.random.default_rng(11)
    p = 8
    A = rng.standard_normal((p, p)) * np.geomspace(1, 0.05, p)
    G = A @ A.T
    C = rng.standard_normal((3, p)) @ A.T
    sigma = C.T @ C
    w, U = np.linalg.eigh(G)
    U = U[:, ::-1]
    carried = np.array([U[:, j] @ sigma @ U[:, j] for j in range(p)])
    shares = np.cumsum(carried) / np.trace(sigma)
    for share in (0.3, 0.6, 0.8, 0.95):
        if np.min(np.abs(shares - share)) < 1e-6:    # too close to call: not a test
            continue
        expected = int(np.argmax(shares >= share)) + 1
        k = directions_needed(torch.as_tensor(sigma), torch.as_tensor(G), share)
        assert k is not None and k is not Ellipsis, (
            f"directions_needed returned {k!r}; expected an int")
        assert int(k) == expected, (
            f"share = {share}: the top-k eigenvectors of G carry the cumulative shares "
            f"{np.round(shares, 3).tolist()} of Tr sigma, so k = {expected}; got {k}. "
            f"Hint: u_j^T sigma u_j summed over the top k eigenvectors (largest "
            f"eigenvalues first), divided by Tr sigma")


@check("ex-ch2-directions", hidden=True, points=2)
def directions_invariances(directions_needed):
    """Hidden: rotation and scaling invariance, numpy input, rank-deficient G, int type."""
    import numbers

    import numpy as np
    import torch

    assert directions_needed is not None, "directions_needed is not defined yet"
    rng = np.random.default_rng(3)
    p, n = 10, 4
    J = rng.standard_normal((n, p))
    G = J.T @ J / n                                    # rank n < p
    e = rng.standard_normal(n)
    g = e[:, None] * J
    C = g - g.mean(0)
    sigma = C.T @ C / n                                # lies in range(G)
    # share just below 1: an exact 1 would hinge on round-off
    k = directions_needed(torch.as_tensor(sigma), torch.as_tensor(G), 1 - 1e-9)
    assert isinstance(k, numbers.Integral), f"expected an int, got {type(k).__name__}"
    assert 1 <= k <= n, (
        f"sigma lies in range(G) of rank {n}: the top {n} eigenvectors carry all of it "
        f"(share = 1 - 1e-9), so k <= {n}; got {k}")
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    for share in (0.5, 0.9, 0.99):
        base = directions_needed(torch.as_tensor(sigma), torch.as_tensor(G), share)
        rotated = directions_needed(torch.as_tensor(Q @ sigma @ Q.T),
                                    torch.as_tensor(Q @ G @ Q.T), share)
        scaled = directions_needed(3.0 * sigma, 0.2 * G, share)      # numpy inputs
        assert int(rotated) == int(base) == int(scaled), (
            f"share = {share}: k must not change under a common rotation or positive "
            f"scalings; got {base}, {rotated} (rotated), {scaled} (scaled, numpy)")



# ------------------------------------------------------------------ ex-ch2-fourth

@check("ex-ch2-fourth", points=2)
def fourth_moment_enumerated(fourth_moment):
    """Public: against the exact E||xi||^4 over all n**B ordered index tuples."""
    import itertools

    import numpy as np
    import torch

    assert fourth_moment is not None, (
        "fourth_moment is not defined yet: define a function fourth_moment(grads, batch_size)")
    gen = torch.Generator().manual_seed(8)
    n, p = 5, 3
    grads = torch.randn(n, p, dtype=torch.float64, generator=gen) + 0.3
    mean = grads.mean(0)
    for B in (1, 3):
        # every ordered tuple is equally likely with replacement: an exact average
        tuples = list(itertools.product(range(n), repeat=B))
        xi = torch.stack([grads[list(t)].mean(0) for t in tuples]) - mean
        exact = float(((xi ** 2).sum(1) ** 2).mean())
        out = fourth_moment(grads.clone(), B)
        assert out is not None and out is not Ellipsis, (
            f"fourth_moment returned {out!r}; expected a float")
        out = float(np.asarray(out))
        assert abs(out - exact) <= 1e-10 * exact, (
            f"n = {n}, B = {B}, with replacement: averaging ||xi||^4 over all {n}**{B} "
            f"ordered batches gives {exact:.10f}, got {out:.10f}. Hint: m4 uses the centred "
            f"gradients; the (B - 1) term has (Tr Sigma_1)^2 + 2 ||Sigma_1||_F^2 (two "
            f"pairings give ||Sigma_1||_F^2), and everything is divided by B^3")


@check("ex-ch2-fourth", hidden=True, points=2)
def fourth_moment_hidden(fourth_moment):
    """Hidden: p > n, B = 2 and B = n = 4, enumerated."""
    import itertools

    import numpy as np
    import torch

    assert fourth_moment is not None, "fourth_moment is not defined yet"
    rng = np.random.default_rng(21)
    n, p = 4, 7
    grads = torch.as_tensor(rng.standard_normal((n, p)) * np.linspace(2, 0.2, p))
    mean = grads.mean(0)
    for B in (2, 4):
        tuples = list(itertools.product(range(n), repeat=B))
        xi = torch.stack([grads[list(t)].mean(0) for t in tuples]) - mean
        exact = float(((xi ** 2).sum(1) ** 2).mean())
        out = fourth_moment(grads, B)
        assert out is not None and out is not Ellipsis, f"fourth_moment returned {out!r}"
        assert abs(float(np.asarray(out)) - exact) <= 1e-10 * exact, (
            f"n = {n}, p = {p}, B = {B}: expected {exact:.10f}, got {float(out):.10f}")


# A plausible wrong answer per question (each must fail a public check).
WRONG_ANSWERS = {
    # with replacement, multisets instead of the equally likely ordered tuples
    "ex-ch2-enumerate": '''\
import itertools


def enumerated_covariance(grads, batch_size, replacement):
    """Exact covariance of the minibatch noise, by enumerating every batch.

    Parameters
    ----------
    grads : torch.Tensor, shape (n, p)
        Per-sample gradients g_i as rows.
    batch_size : int
        B, the number of indices in a batch.
    replacement : bool
        True: the batches are the n**B ordered index tuples; False: the
        binomial(n, B) subsets. Either way every batch is equally likely.

    Returns
    -------
    torch.Tensor, shape (p, p)
        E[xi xi^T] with xi = g_b - mean of the g_i, in float64.
    """
    grads = torch.as_tensor(grads, dtype=torch.float64)
    n = grads.shape[0]
    if replacement:
        batches = list(itertools.combinations_with_replacement(range(n), batch_size))
    else:
        batches = list(itertools.combinations(range(n), batch_size))
    xi = torch.stack([grads[list(b)].mean(0) for b in batches]) - grads.mean(0)
    return xi.T @ xi / len(batches)
''',
    # eigh returns increasing eigenvalues: the "top" k are then the flattest
    "ex-ch2-directions": '''\
def directions_needed(sigma, G, share=0.9):
    """Smallest k whose top-k eigenvectors of G carry `share` of Tr(sigma).

    Parameters
    ----------
    sigma : torch.Tensor, shape (p, p)
        A covariance (symmetric positive semi-definite, positive trace).
    G : torch.Tensor, shape (p, p)
        A symmetric positive semi-definite matrix (e.g. Gauss-Newton).
    share : float
        The share of Tr(sigma) to reach, in (0, 1].

    Returns
    -------
    int
        The smallest k with sum_{j<=k} u_j^T sigma u_j >= share * Tr(sigma), where
        u_1, u_2, ... are the eigenvectors of G by decreasing eigenvalue.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    G = torch.as_tensor(G, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(G)                   # increasing order
    U = vectors
    carried = ((sigma @ U) * U).sum(0)                       # u_j^T sigma u_j
    reached = torch.cumsum(carried, 0) >= share * torch.trace(sigma) * (1 - 1e-12)
    return int(torch.nonzero(reached)[0, 0]) + 1
''',
    # one pairing of the four indices forgotten: ||Sigma_1||_F^2 once instead of twice
    "ex-ch2-fourth": '''\
def fourth_moment(grads, batch_size):
    """E||xi||^4 of the minibatch noise with replacement, from part (a).

    Parameters
    ----------
    grads : torch.Tensor, shape (n, p)
        Per-sample gradients g_i as rows.
    batch_size : int
        B >= 1.

    Returns
    -------
    float
        (m4 + (B - 1) [(Tr Sigma_1)^2 + 2 ||Sigma_1||_F^2]) / B^3.
    """
    grads = torch.as_tensor(grads, dtype=torch.float64)
    C = grads - grads.mean(0)
    n, B = C.shape[0], batch_size
    m4 = float(((C ** 2).sum(1) ** 2).mean())
    # Tr Sigma_1 and ||Sigma_1||_F^2 through the n x n Gram matrix of the centred rows
    K = C @ C.T / n
    trace, frob2 = float(K.trace()), float((K ** 2).sum())
    return (m4 + (B - 1) * (trace ** 2 + frob2)) / B ** 3
''',
}
