"""Auto-checks of chapter 9 (real data).

Checked exercises:

``ex-ch9-conv-gram``
    ``conv_gram(D, U)``: the n×n Gram matrix K_ij = ⟨Δ_i U_iᵀ, Δ_j U_jᵀ⟩ of a convolution's
    per-sample weight gradients, from the signals D (n, C_out, P) and the unfolded inputs
    U (n, C_in·κ, P). Public: random D, U against the gradients written out
    (``einsum('ias,ibs->iab')``, flattened, times their transpose); K symmetric and
    positive semi-definite; P = 1 gives the linear layer's (DDᵀ)∘(UUᵀ). Hidden: a real
    convolution (``F.conv2d`` with padding, and one with stride), Δ by autograd from a
    summed per-sample loss, U by ``F.unfold``, against per-sample weight gradients from a
    loop over samples; n = 1 with P > 1 and the float64 result.
``ex-ch9-coverage``
    ``log_interval(value, stderr, level=0.95)``: value·exp(∓z·se/value) with
    z = Φ⁻¹((1 + level)/2). Public: value 1, se 0.1 at 95 % against scipy's ``norm.ppf``;
    low < value < high and high/value = value/low. Hidden: numpy arrays elementwise at
    level 0.9, and se = 0 gives (value, value).

Tolerances: relative 1e-10 (Gram matrices, float64), 1e-12 (intervals).
"""

from assignments.otter_checks import check

SETUP = """\
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm

import noisegeom as ng
"""


@check("ex-ch9-conv-gram", points=2)
def conv_gram_matches_written_out_gradients(conv_gram):
    import torch

    assert conv_gram is not None, "conv_gram is not defined yet: run the cell that defines it"
    gen = torch.Generator().manual_seed(91)
    n, c_out, c_in_k, P = 5, 3, 4, 6
    D = torch.randn(n, c_out, P, dtype=torch.float64, generator=gen)
    U = torch.randn(n, c_in_k, P, dtype=torch.float64, generator=gen)
    K = conv_gram(D.clone(), U.clone())
    assert K is not None and K is not Ellipsis, f"conv_gram returned {K!r}; expected an (n, n) tensor"
    K = torch.as_tensor(K, dtype=torch.float64)
    assert tuple(K.shape) == (n, n), (
        f"conv_gram must return an (n, n) = ({n}, {n}) matrix; got shape {tuple(K.shape)}")
    grads = torch.einsum("ias,ibs->iab", D, U).reshape(n, -1)      # row i: Δ_i U_iᵀ, flattened
    ref = grads @ grads.T
    err = float(torch.linalg.norm(K - ref) / torch.linalg.norm(ref))
    same_position = torch.einsum("ias,jas,ibs,jbs->ij", D, D, U, U)
    hint = ""
    if torch.allclose(K, same_position, rtol=1e-10, atol=0):
        hint = (" Your K keeps only the terms s = t, Σ_s (δ_is·δ_js)(u_is·u_js): the inner product of "
                "Δ_i U_iᵀ = Σ_s δ_is u_isᵀ with Δ_j U_jᵀ = Σ_t δ_jt u_jtᵀ has a term for every pair of "
                "positions (s, t).")
    elif torch.allclose(K, torch.diag(torch.diag(ref)), rtol=1e-10, atol=0):
        hint = " Your K is diagonal: the off-diagonal K_ij (i ≠ j) pair two different samples."
    assert err < 1e-10, (
        f"K_ij must be ⟨Δ_i U_iᵀ, Δ_j U_jᵀ⟩ = Σ_(s,t) (δ_is·δ_jt)(u_is·u_jt); on random D {tuple(D.shape)} and "
        f"U {tuple(U.shape)} your K differs from the Gram matrix of the gradients written out by "
        f"{err:.2e} (relative).{hint}")


@check("ex-ch9-conv-gram", points=1)
def conv_gram_is_a_gram_matrix_and_reduces_to_linear(conv_gram):
    import torch

    assert conv_gram is not None, "conv_gram is not defined yet: run the cell that defines it"
    gen = torch.Generator().manual_seed(92)
    n = 6
    D = torch.randn(n, 2, 5, dtype=torch.float64, generator=gen)
    U = torch.randn(n, 7, 5, dtype=torch.float64, generator=gen)
    K = conv_gram(D, U)
    assert K is not None and K is not Ellipsis, f"conv_gram returned {K!r}; expected an (n, n) tensor"
    K = torch.as_tensor(K, dtype=torch.float64)
    assert tuple(K.shape) == (n, n), (
        f"conv_gram must return an (n, n) = ({n}, {n}) matrix; got shape {tuple(K.shape)}")
    asym = float(torch.linalg.norm(K - K.T) / torch.linalg.norm(K))
    assert asym < 1e-12, f"a Gram matrix is symmetric; ‖K - Kᵀ‖/‖K‖ = {asym:.2e}"
    eig = torch.linalg.eigvalsh((K + K.T) / 2)
    assert eig[0] >= -1e-10 * eig[-1], (
        f"a Gram matrix is positive semi-definite; the smallest eigenvalue of K is {float(eig[0]):.3e} "
        f"(largest {float(eig[-1]):.3e})")
    # one position (P = 1): a linear layer, chapter 5's product of two inner products
    d = torch.randn(n, 3, 1, dtype=torch.float64, generator=gen)
    u = torch.randn(n, 4, 1, dtype=torch.float64, generator=gen)
    K1 = conv_gram(d, u)
    assert K1 is not None and K1 is not Ellipsis, f"conv_gram returned {K1!r} for P = 1"
    K1 = torch.as_tensor(K1, dtype=torch.float64)
    ref = (d[:, :, 0] @ d[:, :, 0].T) * (u[:, :, 0] @ u[:, :, 0].T)
    assert tuple(K1.shape) == (n, n) and torch.allclose(K1, ref, rtol=1e-12, atol=0), (
        "with one position (P = 1) the layer is linear and K_ij = (δ_i·δ_j)(u_i·u_j), the entrywise product "
        "of the two Gram matrices; conv_gram does not give it")


@check("ex-ch9-conv-gram", hidden=True, points=2)
def conv_gram_on_a_real_convolution(conv_gram):
    import torch
    import torch.nn.functional as F

    assert conv_gram is not None, "conv_gram is not defined yet"
    gen = torch.Generator().manual_seed(93)
    n, c_in, c_out = 4, 2, 3
    x = torch.randn(n, c_in, 5, 5, dtype=torch.float64, generator=gen)
    t = torch.randn(n, c_out, 5, 5, dtype=torch.float64, generator=gen)
    for kernel, padding, stride in [(3, 1, 1), (2, 0, 2)]:
        W = torch.randn(c_out, c_in, kernel, kernel, dtype=torch.float64, generator=gen)
        b = torch.randn(c_out, dtype=torch.float64, generator=gen)

        def losses(z, target):
            # a per-sample loss that is not linear in z, so Δ_i depends on the sample
            return ((torch.tanh(z) - target) ** 2).flatten(1).sum(1)

        z = F.conv2d(x, W, b, padding=padding, stride=stride).requires_grad_(True)
        target = t[:, :, :z.shape[2], :z.shape[3]]
        D = torch.autograd.grad(losses(z, target).sum(), z)[0].flatten(2)    # (n, C_out, P)
        U = F.unfold(x, kernel, padding=padding, stride=stride)              # (n, C_in κ, P)
        rows = []
        for i in range(n):                         # per-sample weight gradients, one at a time
            Wi = W.clone().requires_grad_(True)
            zi = F.conv2d(x[i:i + 1], Wi, b, padding=padding, stride=stride)
            rows.append(torch.autograd.grad(losses(zi, target[i:i + 1]).sum(), Wi)[0].flatten())
        G = torch.stack(rows)
        ref = G @ G.T
        K = conv_gram(D, U)
        assert K is not None and K is not Ellipsis, f"conv_gram returned {K!r}"
        K = torch.as_tensor(K, dtype=torch.float64)
        err = float(torch.linalg.norm(K - ref) / torch.linalg.norm(ref))
        assert err < 1e-10, (f"kernel {kernel}, padding {padding}, stride {stride}: relative difference "
                             f"{err:.2e} from the Gram matrix of per-sample weight gradients")


@check("ex-ch9-conv-gram", hidden=True, points=1)
def conv_gram_one_sample_and_dtype(conv_gram):
    import torch

    assert conv_gram is not None, "conv_gram is not defined yet"
    gen = torch.Generator().manual_seed(94)
    D = torch.randn(1, 3, 7, dtype=torch.float64, generator=gen)
    U = torch.randn(1, 5, 7, dtype=torch.float64, generator=gen)
    K = conv_gram(D, U)
    assert K is not None and K is not Ellipsis, f"conv_gram returned {K!r}"
    assert torch.is_tensor(K) and K.dtype == torch.float64, (
        f"float64 inputs must give a float64 tensor; got {type(K).__name__} "
        f"{getattr(K, 'dtype', '')}")
    assert tuple(K.shape) == (1, 1), f"one sample (n = 1) must give a 1×1 matrix; got shape {tuple(K.shape)}"
    ref = float(torch.linalg.norm(D[0] @ U[0].T) ** 2)
    assert abs(float(K[0, 0]) - ref) < 1e-10 * ref, (
        f"for one sample K = ‖Δ Uᵀ‖_F² = {ref!r}; got {float(K[0, 0])!r}")


@check("ex-ch9-coverage", points=2)
def log_interval_matches_the_formula(log_interval):
    import math

    from scipy.stats import norm

    assert log_interval is not None, "log_interval is not defined yet: run the cell that defines it"
    out = log_interval(1.0, 0.1, 0.95)
    assert out is not None and out is not Ellipsis, f"log_interval returned {out!r}; expected a pair (low, high)"
    assert len(out) == 2, f"log_interval must return the pair (low, high); got {out!r}"
    low, high = float(out[0]), float(out[1])
    z = norm.ppf(0.975)
    want = (math.exp(-z * 0.1), math.exp(z * 0.1))
    hint = ""
    if abs(low - (1 - z * 0.1)) < 1e-9:
        hint = (" That is the symmetric interval value ∓ z·se; the interval of log(value) is mapped back "
                "by exp: value·exp(∓z·se/value).")
    else:
        z_used = -math.log(low) / 0.1 if low > 0 else float("nan")
        if abs(z_used - norm.ppf(0.95)) < 1e-3:
            hint = (f" Your z is {z_used:.4f} = Φ⁻¹(0.95), the one-sided quantile; a two-sided 95 % "
                    "interval leaves 2.5 % in each tail: z = norm.ppf((1 + level)/2) ≈ 1.96.")
        elif abs(z_used - 1.96) < 1e-6:
            hint = " Your z is the rounded 1.96; compute it as norm.ppf((1 + level)/2)."
    assert abs(low - want[0]) < 1e-12 and abs(high - want[1]) < 1e-12, (
        f"for value 1, stderr 0.1, level 0.95: expected (exp(-0.1z), exp(0.1z)) = ({want[0]:.10f}, "
        f"{want[1]:.10f}) with z = Φ⁻¹(0.975) = {z:.6f}; got ({low:.10f}, {high:.10f}).{hint}")


@check("ex-ch9-coverage", points=1)
def log_interval_is_symmetric_on_the_log_scale(log_interval):
    assert log_interval is not None, "log_interval is not defined yet: run the cell that defines it"
    for value, se, level in [(2.5, 0.4, 0.95), (0.03, 0.02, 0.8)]:
        out = log_interval(value, se, level)
        assert out is not None and out is not Ellipsis, f"log_interval returned {out!r}"
        low, high = float(out[0]), float(out[1])
        assert 0 < low < value < high, (
            f"value {value}, stderr {se}, level {level}: expected 0 < low < value < high, got ({low!r}, {high!r})")
        ratio_up, ratio_down = high / value, value / low
        assert abs(ratio_up - ratio_down) < 1e-12 * ratio_up, (
            f"value {value}, stderr {se}: an interval of log(value) mapped back is symmetric in ratio, "
            f"high/value = value/low; got {ratio_up:.12g} and {ratio_down:.12g}")


@check("ex-ch9-coverage", hidden=True, points=2)
def log_interval_on_arrays_and_another_level(log_interval):
    import numpy as np
    from scipy.stats import norm

    assert log_interval is not None, "log_interval is not defined yet"
    rng = np.random.default_rng(95)
    value = rng.uniform(0.2, 5.0, size=7)
    se = rng.uniform(0.01, 1.0, size=7)
    z = norm.ppf(0.95)
    out = log_interval(value, se, level=0.9)
    assert out is not None and out is not Ellipsis, f"log_interval returned {out!r}"
    low, high = np.asarray(out[0], dtype=float), np.asarray(out[1], dtype=float)
    assert low.shape == value.shape and high.shape == value.shape, (
        f"arrays of shape {value.shape} must give (low, high) of that shape; got {low.shape}, {high.shape}")
    msg = "level 0.9 on arrays: expected value·exp(∓z·se/value) elementwise with z = Φ⁻¹(0.95) = 1.6449"
    np.testing.assert_allclose(low, value * np.exp(-z * se / value), rtol=1e-12, atol=0, err_msg=msg)
    np.testing.assert_allclose(high, value * np.exp(z * se / value), rtol=1e-12, atol=0, err_msg=msg)
    low95, high95 = log_interval(value, se)
    np.testing.assert_allclose(np.asarray(high95, dtype=float),
                               value * np.exp(norm.ppf(0.975) * se / value), rtol=1e-12, atol=0,
                               err_msg="the default level is 0.95")


@check("ex-ch9-coverage", hidden=True, points=1)
def log_interval_without_error_is_a_point(log_interval):
    import numpy as np

    assert log_interval is not None, "log_interval is not defined yet"
    value = np.array([0.5, 1.0, 3.0])
    low, high = log_interval(value, np.zeros(3))
    msg = "stderr 0 must give the point interval (value, value)"
    np.testing.assert_allclose(np.asarray(low, dtype=float), value, rtol=1e-15, atol=0, err_msg=msg)
    np.testing.assert_allclose(np.asarray(high, dtype=float), value, rtol=1e-15, atol=0, err_msg=msg)
    low1, high1 = log_interval(2.0, 0.0, 0.99)
    assert float(low1) == 2.0 and float(high1) == 2.0, f"stderr 0 must give (2, 2); got ({low1!r}, {high1!r})"


WRONG_ANSWERS = {
    "ex-ch9-conv-gram": '''\
def conv_gram(D, U):
    """Gram matrix of per-sample convolution weight gradients, pairing equal positions only."""
    return torch.einsum("ias,jas,ibs,jbs->ij", D, D, U, U)
''',
    "ex-ch9-coverage": '''\
def log_interval(value, stderr, level=0.95):
    """The log-scale interval with the one-sided quantile."""
    z = 1.645
    return value * np.exp(-z * stderr / value), value * np.exp(z * stderr / value)
''',
}
