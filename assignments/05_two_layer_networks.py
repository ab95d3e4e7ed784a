"""Auto-checks of chapter 5 (two-layer networks).

Checked exercises:

``ex-ch5-hadamard``
    ``hadamard_gram(X, W, a, dsigma)``: the Gram matrix K = C ⊙ XXᵀ. Public: agreement
    with JJᵀ from an explicitly built Jacobian (tanh), and the linear activation, where
    K = (Σ a_k²) XXᵀ (catches a in place of a²). Hidden: agreement with
    ``tl.two_layer_gram`` for ReLU and softplus at other sizes, and K(X, W, s·a) = s² K.
``ex-ch5-dead``
    ``dead_input(W)``: every pre-activation negative, on nearly orthogonal rows (public)
    and on rows where the hint -Σ w_k fails (hidden). ``gram_alignment(K, e)``:
    agreement with ``tl.gram_mu`` and invariance under scaling e and K (public);
    agreement with μ from Σ₁ and G built from a Jacobian, and μ = 0 for a residual
    carried by a dead sample (hidden).

All comparisons are in float64 with relative tolerance 1e-8.
"""

from assignments.otter_checks import check

SETUP = """\
import numpy as np
import torch

import noisegeom as ng
from noisegeom.chapters import ch05_two_layer_networks as tl
"""


@check("ex-ch5-hadamard", points=2)
def hadamard_gram_matches_jacobian(hadamard_gram):
    import numpy as np
    import torch

    def as_array(v, name, shape):
        assert v is not None and v is not Ellipsis, (
            f"{name} returned {v!r}; expected an array of shape {shape}")
        v = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
        assert v.shape == shape, f"{name} returned shape {v.shape}; expected {shape}"
        return v.astype(np.float64)

    assert hadamard_gram is not None, "hadamard_gram is not defined yet: run the cell that defines it"
    g = torch.Generator().manual_seed(11)
    n, m, d = 6, 7, 5
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(m, d, generator=g, dtype=torch.float64) / np.sqrt(d)
    a = torch.randn(m, generator=g, dtype=torch.float64) / np.sqrt(m)
    dtanh = lambda z: 1 - torch.tanh(z) ** 2
    K = as_array(hadamard_gram(X, W, a, dtanh), "hadamard_gram(X, W, a, dsigma)", (n, n))
    # independent route: the Jacobian, row i = vec of the gradient a_k σ'(w_kᵀx_i) x_i
    J = np.stack([(a[:, None] * dtanh(W @ x)[:, None] * x[None, :]).reshape(-1).numpy()
                  for x in X])
    K_ref = J @ J.T
    err = np.abs(K - K_ref).max() / np.abs(K_ref).max()
    assert err < 1e-8, (
        f"hadamard_gram differs from JJᵀ of the explicit Jacobian (tanh, n={n}, m={m}, d={d}) "
        f"by {err:.2e} (relative). K_ij must be Σ_k a_k² σ'(w_kᵀx_i) σ'(w_kᵀx_j) x_iᵀx_j: "
        "an entrywise (Hadamard) product of C = D Diag(a²) Dᵀ with XXᵀ, not a matrix product")


@check("ex-ch5-hadamard", points=1)
def hadamard_gram_linear_activation(hadamard_gram):
    import numpy as np
    import torch

    assert hadamard_gram is not None, "hadamard_gram is not defined yet: run the cell that defines it"
    g = torch.Generator().manual_seed(12)
    n, m, d = 5, 4, 3
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(m, d, generator=g, dtype=torch.float64)
    a = torch.tensor([0.9, -0.4, 0.3, -0.7], dtype=torch.float64)
    out = hadamard_gram(X, W, a, lambda z: torch.ones_like(z))
    assert out is not None and out is not Ellipsis, (
        f"hadamard_gram returned {out!r}; expected an ({n}, {n}) tensor")
    K = out.detach().numpy() if torch.is_tensor(out) else np.asarray(out)
    expected = float((a ** 2).sum()) * (X @ X.T).numpy()
    assert K.shape == (n, n), f"hadamard_gram returned shape {K.shape}; expected ({n}, {n})"
    err = np.abs(K - expected).max() / np.abs(expected).max()
    assert err < 1e-8, (
        f"for σ(z) = z (σ' = 1) the Gram matrix must be (Σ_k a_k²) XXᵀ = {float((a ** 2).sum()):.3f}·XXᵀ; "
        f"yours is off by {err:.2e} (relative). Did you weight by a_k instead of a_k² "
        f"(Σ_k a_k = {float(a.sum()):.3f} here)?")


@check("ex-ch5-hadamard", hidden=True, points=2)
def hadamard_gram_matches_package(hadamard_gram):
    import numpy as np
    import torch
    from noisegeom.chapters import ch05_two_layer_networks as tl

    assert hadamard_gram is not None, "hadamard_gram is not defined yet"
    derivatives = {"relu": lambda z: (z > 0).to(z.dtype),
                   "softplus": lambda z: torch.sigmoid(z)}
    g = torch.Generator().manual_seed(13)
    for (n, m, d), act in [((9, 16, 12), "relu"), ((4, 3, 20), "softplus")]:
        X = torch.randn(n, d, generator=g, dtype=torch.float64)
        W = torch.randn(m, d, generator=g, dtype=torch.float64) / np.sqrt(d)
        a = torch.randn(m, generator=g, dtype=torch.float64) / np.sqrt(m)
        out = hadamard_gram(X, W, a, derivatives[act])
        assert out is not None and out is not Ellipsis, f"hadamard_gram returned {out!r}"
        K = out.detach().numpy() if torch.is_tensor(out) else np.asarray(out, dtype=float)
        ref = tl.two_layer_gram(X, W, a, act).K.numpy()
        assert K.shape == ref.shape, f"shape {K.shape}, expected {ref.shape}"
        err = np.abs(K - ref).max() / np.abs(ref).max()
        assert err < 1e-8, f"{act}, (n, m, d) = {(n, m, d)}: relative error {err:.2e} against tl.two_layer_gram"
        out2 = hadamard_gram(X, W, 3.0 * a, derivatives[act])
        K2 = out2.detach().numpy() if torch.is_tensor(out2) else np.asarray(out2, dtype=float)
        assert np.allclose(K2, 9.0 * K, rtol=1e-8, atol=1e-12), "K(X, W, 3a) must be 9 K(X, W, a)"


@check("ex-ch5-dead", points=1)
def dead_input_kills_every_unit(dead_input):
    import numpy as np
    import torch

    assert dead_input is not None, "dead_input is not defined yet: run the cell that defines it"
    g = torch.Generator().manual_seed(21)
    m, d = 8, 50
    W = torch.randn(m, d, generator=g, dtype=torch.float64) / np.sqrt(d)
    x = dead_input(W)
    assert x is not None and x is not Ellipsis, f"dead_input returned {x!r}; expected a ({d},) tensor"
    x = x.detach().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=float)
    assert x.shape == (d,), f"dead_input returned shape {x.shape}; expected ({d},)"
    z = W.numpy() @ x
    assert (z < 0).all(), (
        f"dead_input(W) must give w_kᵀx < 0 for every unit; {int((z >= 0).sum())} of {m} "
        f"pre-activations are ≥ 0 (largest {z.max():.3g})")


@check("ex-ch5-dead", hidden=True, points=1)
def dead_input_beyond_the_hint(dead_input):
    import numpy as np
    import torch

    assert dead_input is not None, "dead_input is not defined yet"
    # rows 1 and 2 nearly cancel: -Σ_k w_k is almost orthogonal to both, and fails
    W = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                      [-1.0, 0.05, 0.0, 0.0],
                      [0.0, 0.0, 1.0, 0.2]], dtype=torch.float64)
    g = torch.Generator().manual_seed(22)
    W2 = torch.randn(5, 7, generator=g, dtype=torch.float64)
    for w in (W, W2):
        x = dead_input(w)
        assert x is not None and x is not Ellipsis, f"dead_input returned {x!r}"
        x = x.detach().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=float)
        z = w.numpy() @ x
        assert x.shape == (w.shape[1],) and (z < 0).all(), (
            f"for W of shape {tuple(w.shape)} some pre-activation is ≥ 0: {np.round(z, 4)}. "
            "-Σ_k w_k fails when rows nearly cancel; solve Wx = -1 instead")


@check("ex-ch5-dead", points=2)
def gram_alignment_matches_gram_mu(gram_alignment):
    import numpy as np
    import torch
    from noisegeom.chapters import ch05_two_layer_networks as tl

    assert gram_alignment is not None, "gram_alignment is not defined yet: run the cell that defines it"
    g = torch.Generator().manual_seed(23)
    n, p = 7, 12
    J = torch.randn(n, p, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2, p, dtype=torch.float64)
    K = J @ J.T
    e = torch.randn(n, generator=g, dtype=torch.float64)
    mu = gram_alignment(K, e)
    assert mu is not None and mu is not Ellipsis, f"gram_alignment returned {mu!r}; expected a float"
    mu = float(mu)
    ref = float(tl.gram_mu(K, e))
    assert abs(mu - ref) < 1e-8 * abs(ref), (
        f"gram_alignment(K, e) = {mu:.6g}, expected {ref:.6g} (tl.gram_mu). The numerator is "
        "n Σ_i e_i² (K²)_ii - ‖Ke‖²: the second term is the mean gradient, ∇L = Jᵀe/n, removed "
        "from the covariance; the denominator is ‖e‖² ‖K‖_F²")
    for scale_e, scale_K in [(3.0, 1.0), (1.0, 0.01)]:
        other = float(gram_alignment(scale_K * K, scale_e * e))
        assert abs(other - mu) < 1e-8 * abs(mu), (
            f"μ must not change when e is multiplied by {scale_e} and K by {scale_K}; "
            f"got {other:.6g} instead of {mu:.6g}: check the normalisation by ‖e‖² and ‖K‖_F²")


@check("ex-ch5-dead", hidden=True, points=2)
def gram_alignment_from_covariance(gram_alignment):
    import numpy as np
    import torch

    import noisegeom as ng

    assert gram_alignment is not None, "gram_alignment is not defined yet"
    g = torch.Generator().manual_seed(24)
    n, p = 9, 5
    J = torch.randn(n, p, generator=g, dtype=torch.float64)
    e = torch.randn(n, generator=g, dtype=torch.float64)
    # independent route: μ = Tr(Σ₁G)/(2L‖G‖_F²) with Σ₁ and G as p×p matrices
    Sigma1 = ng.noise_covariance(e[:, None] * J)
    G = J.T @ J / n
    ref = float((Sigma1 * G).sum() / ((e @ e / n) * (G * G).sum()))
    mu = gram_alignment(J @ J.T, e)
    assert mu is not None and mu is not Ellipsis, f"gram_alignment returned {mu!r}; expected a float"
    mu = float(mu)
    assert abs(mu - ref) < 1e-8 * abs(ref), f"μ = {mu:.6g}, expected Tr(Σ₁G)/(2L‖G‖_F²) = {ref:.6g}"
    # a dead sample: zero row of J, residual on it only
    J[0] = 0.0
    e_dead = torch.zeros(n, dtype=torch.float64)
    e_dead[0] = 1.0
    mu0 = float(gram_alignment(J @ J.T, e_dead))
    assert abs(mu0) < 1e-12, f"μ for a residual carried by a dead sample must be 0, got {mu0:.3g}"


WRONG_ANSWERS = {
    "ex-ch5-hadamard": '''\
def hadamard_gram(X, W, a, dsigma):
    """Gram matrix K = C ⊙ XXᵀ of f(x) = Σ_k a_k σ(w_kᵀx) with a fixed."""
    X, W, a = (torch.as_tensor(v, dtype=torch.float64) for v in (X, W, a))
    D = dsigma(X @ W.T)
    C = (D * a) @ D.T                       # a instead of a²
    return C * (X @ X.T)
''',
    "ex-ch5-dead": '''\
def dead_input(W):
    """An input that no unit activates."""
    W = torch.as_tensor(W, dtype=torch.float64)
    return torch.linalg.lstsq(W, -torch.ones(W.shape[0], 1, dtype=torch.float64),
                              driver="gelsd").solution[:, 0]


def gram_alignment(K, e):
    """Average alignment μ from K and e, forgetting the mean-gradient term."""
    K = torch.as_tensor(K, dtype=torch.float64)
    e = torch.as_tensor(e, dtype=torch.float64)
    nu = (K * K).sum(1)
    return float(len(e) * (e ** 2 * nu).sum() / ((e @ e) * (K * K).sum()))
''',
}
