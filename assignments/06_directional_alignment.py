"""Auto-checks of chapter 6 (directional alignment).

Checked exercises:

``ex-ch6-eigen``
    ``eigen_alignment(J, e)``: eigenvalues of G and g along its eigenvectors. Public:
    agreement with the definition g(v) = vᵀΣ₁v/(2L vᵀGv) on dense p×p matrices (n < p),
    eigenvalues in decreasing order, and mean_j g(v_j) = 1 - 1/n (part 3 of the
    theorem; a missing (eᵀw_j)² term gives mean 1). Hidden: a rank-deficient J (only
    the r non-zero eigenvalues), agreement with ``spectrum_alignment``, and invariance
    of g under e -> s·e and J -> s·J (λ -> s²λ).
``ex-ch6-ghosts``
    ``lanczos_basis(A, steps, reorthogonalize, seed)``: the Lanczos pair (Q_m, T_m).
    Public: with re-orthogonalisation, QᵀQ = I, T symmetric tridiagonal, QᵀAQ = T and
    the Lanczos relation AQ_m = Q_mT_m + (last column only); without it, the same
    relation on a few steps (a missing β_{j-1}q_{j-1} term breaks it). Hidden: top
    Ritz value against ``eigvalsh`` after enough steps, and ghosts: without
    re-orthogonalisation orthogonality is lost after convergence (> 1e-3), with it
    it stays < 1e-10.

Tolerances are relative to ‖A‖ (or to the largest entry), 1e-8 unless stated.
"""

from assignments.otter_checks import check

SETUP = """\
import numpy as np
import torch

import noisegeom as ng
from noisegeom import two_layer_task
from noisegeom.chapters.ch06_directional_alignment import lanczos, spectrum_alignment
"""


@check("ex-ch6-eigen", points=2)
def eigen_alignment_matches_definition(eigen_alignment):
    import numpy as np
    import torch

    def to_np(v, what):
        assert v is not None and v is not Ellipsis, f"{what} is {v!r}; expected an array"
        return v.detach().cpu().numpy().astype(float) if torch.is_tensor(v) else np.asarray(v, dtype=float)

    assert eigen_alignment is not None, "eigen_alignment is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(31)
    n, p = 8, 20
    J = rng.standard_normal((n, p)) * np.linspace(0.2, 2.0, p)
    e = rng.standard_normal(n)
    out = eigen_alignment(J, e)
    assert out is not None and out is not Ellipsis, (
        f"eigen_alignment returned {out!r}; expected a pair (lam, g) of arrays of length rank G")
    assert len(out) == 2, f"eigen_alignment must return a pair (lam, g), got {len(out)} items"
    lam, g = to_np(out[0], "lam"), to_np(out[1], "g")
    assert lam.shape == (n,) and g.shape == (n,), (
        f"for J of shape {J.shape} (rank {n}) expected lam and g of shape ({n},), got {lam.shape} and {g.shape}")
    assert (np.diff(lam) <= 1e-12 * lam[0]).all(), f"lam must be in decreasing order, got {np.round(lam, 4)}"
    # independent route: G and Σ₁ as p×p matrices, g from the definition
    G = J.T @ J / n
    grads = e[:, None] * J
    mean = grads.mean(0)
    Sigma1 = grads.T @ grads / n - np.outer(mean, mean)
    lam_d, V = np.linalg.eigh(G)
    lam_d, V = lam_d[::-1][:n], V[:, ::-1][:, :n]
    g_d = np.einsum("pj,pq,qj->j", V, Sigma1, V) / (np.mean(e ** 2) * lam_d)
    err_l = np.abs(lam - lam_d).max() / lam_d[0]
    assert err_l < 1e-8, (
        f"eigenvalues of G = JᵀJ/n off by {err_l:.1e} (relative): expected {np.round(lam_d[:3], 5)}..., "
        f"got {np.round(lam[:3], 5)}... (did you forget to divide the eigenvalues of K = JJᵀ by n?)")
    err_g = np.abs(g - g_d).max()
    assert err_g < 1e-8, (
        f"g(v_j) differs from vᵀΣ₁v/(2L vᵀGv) by up to {err_g:.1e}: expected {np.round(g_d[:3], 4)}..., "
        f"got {np.round(g[:3], 4)}... Part 2 of the theorem: [n Σ_i e_i² w_ij² - (eᵀw_j)²]/‖e‖²")


@check("ex-ch6-eigen", points=1)
def eigen_alignment_mean_is_one_minus_one_over_n(eigen_alignment):
    import numpy as np
    import torch

    assert eigen_alignment is not None, "eigen_alignment is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(32)
    n, p = 10, 25
    J, e = rng.standard_normal((n, p)), rng.standard_normal(n) ** 3
    out = eigen_alignment(J, e)
    assert out is not None and out is not Ellipsis, f"eigen_alignment returned {out!r}; expected (lam, g)"
    g = out[1]
    g = g.detach().numpy() if torch.is_tensor(g) else np.asarray(g, dtype=float)
    assert g.shape == (n,), f"expected g of shape ({n},) for a J of full rank {n}, got {g.shape}"
    assert abs(g.mean() - (1 - 1 / n)) < 1e-10, (
        f"mean_j g(v_j) = {g.mean():.10f}, but part 3 of the theorem says 1 - 1/n = {1 - 1 / n:.10f} "
        "when rank G = n. A mean of exactly 1 means the subtracted (eᵀw_j)² term (the mean gradient) is missing")


@check("ex-ch6-eigen", hidden=True, points=2)
def eigen_alignment_rank_deficient_and_scaling(eigen_alignment):
    import numpy as np
    import torch

    from noisegeom.chapters.ch06_directional_alignment import spectrum_alignment

    def pair(out):
        assert out is not None and out is not Ellipsis, f"eigen_alignment returned {out!r}"
        return [o.detach().numpy() if torch.is_tensor(o) else np.asarray(o, dtype=float) for o in out]

    assert eigen_alignment is not None, "eigen_alignment is not defined yet"
    rng = np.random.default_rng(33)
    n, p, r = 12, 30, 5
    J = rng.standard_normal((n, r)) @ rng.standard_normal((r, p))      # rank 5
    e = rng.standard_normal(n)
    lam, g = pair(eigen_alignment(J, e))
    ref = spectrum_alignment(torch.as_tensor(J), torch.as_tensor(e))
    assert lam.shape == (r,), f"rank G = {r}: expected {r} eigenvalues, got {lam.shape}"
    assert np.allclose(lam, ref["lam"], rtol=1e-8) and np.allclose(g, ref["g"], atol=1e-8), (
        "rank-deficient J: disagreement with spectrum_alignment")
    lam2, g2 = pair(eigen_alignment(3.0 * J, -2.0 * e))
    assert np.allclose(lam2, 9 * lam, rtol=1e-8), "J -> 3J must multiply the eigenvalues by 9"
    assert np.allclose(g2, g, atol=1e-8), "g must not change when J -> 3J and e -> -2e"


@check("ex-ch6-ghosts", points=2)
def lanczos_basis_reorthogonalized(lanczos_basis):
    import numpy as np
    import torch

    def to_np(v, what):
        assert v is not None and v is not Ellipsis, f"{what} is {v!r}; expected an array"
        return v.detach().cpu().numpy().astype(float) if torch.is_tensor(v) else np.asarray(v, dtype=float)

    assert lanczos_basis is not None, "lanczos_basis is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(41)
    p, m = 30, 12
    B = rng.standard_normal((p, p))
    A = (B + B.T) / 2
    out = lanczos_basis(A, m, reorthogonalize=True, seed=0)
    assert out is not None and out is not Ellipsis, (
        f"lanczos_basis returned {out!r}; expected a pair (Q, T) of shapes ({p}, {m}) and ({m}, {m})")
    Q, T = to_np(out[0], "Q"), to_np(out[1], "T")
    assert Q.shape == (p, m) and T.shape == (m, m), (
        f"expected Q of shape ({p}, {m}) and T of shape ({m}, {m}), got {Q.shape} and {T.shape}")
    scale = np.abs(np.linalg.eigvalsh(A)).max()
    orth = np.abs(Q.T @ Q - np.eye(m)).max()
    assert orth < 1e-10, f"with reorthogonalize=True, QᵀQ must be I; max|q_iᵀq_j - δ_ij| = {orth:.1e}"
    assert np.allclose(T, T.T, atol=1e-12 * scale) and np.allclose(T, np.triu(np.tril(T, 1), -1), atol=1e-10 * scale), (
        "T must be symmetric tridiagonal: α on the diagonal, β_1..β_{m-1} on both off-diagonals")
    err = np.abs(Q.T @ A @ Q - T).max() / scale
    assert err < 1e-8, f"T must equal QᵀAQ; they differ by {err:.1e} (relative to ‖A‖)"
    rel = np.abs((A @ Q - Q @ T)[:, :-1]).max() / scale
    assert rel < 1e-8, (
        f"the Lanczos relation AQ_m = Q_mT_m + β_m q_(m+1) e_mᵀ fails in the first m-1 columns by {rel:.1e}")


@check("ex-ch6-ghosts", points=2)
def lanczos_basis_three_term_recursion(lanczos_basis):
    import numpy as np
    import torch

    assert lanczos_basis is not None, "lanczos_basis is not defined yet: run the cell that defines it"
    rng = np.random.default_rng(42)
    p, m = 40, 6
    B = rng.standard_normal((p, p))
    A = (B + B.T) / 2
    out = lanczos_basis(A, m, reorthogonalize=False, seed=3)
    assert out is not None and out is not Ellipsis, f"lanczos_basis returned {out!r}; expected (Q, T)"
    Q, T = [o.detach().numpy() if torch.is_tensor(o) else np.asarray(o, dtype=float) for o in out]
    assert Q.shape == (p, m) and T.shape == (m, m), f"shapes {Q.shape}, {T.shape}; expected ({p}, {m}), ({m}, {m})"
    scale = np.abs(np.linalg.eigvalsh(A)).max()
    rel = np.abs((A @ Q - Q @ T)[:, :-1]).max() / scale
    assert rel < 1e-8, (
        f"without re-orthogonalisation, A q_j must equal β_(j-1) q_(j-1) + α_j q_j + β_j q_(j+1) "
        f"(columns 1..m-1 of AQ - QT vanish); the largest entry is {rel:.1e} of ‖A‖. "
        "Did you subtract β_(j-1) q_(j-1) before computing α_j and β_j?")
    orth = np.abs(Q.T @ Q - np.eye(m)).max()
    assert orth < 1e-8, f"after {m} steps on a random matrix the q's are still orthonormal; max|QᵀQ - I| = {orth:.1e}"


@check("ex-ch6-ghosts", hidden=True, points=2)
def lanczos_basis_ghosts(lanczos_basis):
    import numpy as np
    import torch

    assert lanczos_basis is not None, "lanczos_basis is not defined yet"
    rng = np.random.default_rng(43)
    lam = np.r_[100.0, np.linspace(0.0, 1.0, 119)]         # one outlier: fast convergence
    U = np.linalg.qr(rng.standard_normal((120, 120)))[0]
    A = U @ np.diag(lam) @ U.T
    m = 40
    res = {}
    for flag in (True, False):
        out = lanczos_basis(A, m, reorthogonalize=flag, seed=5)
        assert out is not None and out is not Ellipsis, f"lanczos_basis returned {out!r}"
        Q, T = [o.detach().numpy() if torch.is_tensor(o) else np.asarray(o, dtype=float) for o in out]
        res[flag] = (np.abs(Q.T @ Q - np.eye(m)).max(), np.linalg.eigvalsh(T)[-1])
    assert abs(res[True][1] - 100.0) < 1e-8, f"top Ritz value {res[True][1]!r}, expected 100"
    assert res[True][0] < 1e-10, f"re-orthogonalised basis lost orthogonality: {res[True][0]:.1e}"
    assert res[False][0] > 1e-3, (
        f"without re-orthogonalisation the plain recursion must lose orthogonality once the outlier "
        f"converges (ghosts); max|QᵀQ - I| = {res[False][0]:.1e}: does reorthogonalize=False still re-orthogonalise?")


WRONG_ANSWERS = {
    "ex-ch6-eigen": '''\
def eigen_alignment(J, e):
    """Eigenvalues of G and g along its eigenvectors, without the mean-gradient term."""
    J = np.asarray(J, dtype=float)
    e = np.asarray(e, dtype=float)
    n = len(e)
    kappa, W = np.linalg.eigh(J @ J.T)
    kappa, W = kappa[::-1], W[:, ::-1]
    keep = kappa > 1e-10 * kappa[0]
    lam, W = kappa[keep] / n, W[:, keep]
    g = n * (e[:, None] ** 2 * W ** 2).sum(0) / (e @ e)
    return lam, g
''',
    "ex-ch6-ghosts": '''\
def lanczos_basis(A, steps, reorthogonalize=True, seed=0):
    """Lanczos basis Q_m and tridiagonal T_m, forgetting the β_(j-1) q_(j-1) term."""
    A = np.asarray(A, dtype=float)
    p = A.shape[0]
    Q = np.zeros((p, steps))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    q = np.random.default_rng(seed).standard_normal(p)
    Q[:, 0] = q / np.linalg.norm(q)
    for j in range(steps):
        w = A @ Q[:, j]
        alpha[j] = Q[:, j] @ w
        w -= alpha[j] * Q[:, j]
        if reorthogonalize:
            for _ in range(2):
                w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        beta[j] = np.linalg.norm(w)
        if j + 1 < steps:
            Q[:, j + 1] = w / beta[j]
    T = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    return Q, T
''',
}
