"""Independent reference routes shared by the package tests, tests/toolbox/ and tests/chapters/
(not a conftest: plain helpers, imported as ``from _fixtures import ...``; pyproject.toml puts
tests/ on the path).

Everything here avoids the code paths under test: per-sample gradients and
Jacobians come from a plain loop over samples with ``torch.autograd`` on the
``nn.Module`` itself (its parameters set to θ, gradients zeroed before every
sample), the generalized Gauss–Newton matrix from that loop and
``torch.autograd.functional.hessian`` of the loss in the outputs, and dense
p×p matrices are assembled with numpy.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import torch

import noisegeom as ng

DT = torch.float64


def module_at(model, theta):
    """A deep copy of ``model.module`` whose trainable parameters hold θ (in FlatModel's order)."""
    mod = copy.deepcopy(model.module)
    params = [q for q in mod.parameters() if q.requires_grad]
    assert sum(q.numel() for q in params) == theta.numel()
    with torch.no_grad():
        k = 0
        for q in params:
            q.copy_(theta[k:k + q.numel()].reshape(q.shape))
            k += q.numel()
    return mod, params


def _outputs(mod, x):
    out = mod(x)
    if out.ndim == 2 and out.shape[1] == 1:  # FlatModel's squeeze convention for scalar models
        out = out[:, 0]
    return out


def sample_loss_of_output(f, y, loss):
    """ℓ as a function of the model output f of ONE sample (f: scalar or (k,))."""
    if loss == "mse":
        return 0.5 * ((f - y) ** 2).sum()
    return torch.logsumexp(f, 0) - f[int(y)]


def loop_per_sample_gradients(model, theta, X, y, loss="mse"):
    """g_i = ∇_θ ℓ_i by an explicit loop with ``.backward()`` on the module; .grad reset every sample."""
    mod, params = module_at(model, theta)
    rows = []
    for i in range(X.shape[0]):
        for q in params:
            q.grad = None  # the bug this guards against: accumulating .grad across samples
        out = _outputs(mod, X[i:i + 1])[0]
        sample_loss_of_output(out, y[i], loss).backward()
        rows.append(torch.cat([q.grad.reshape(-1) for q in params]))
    return torch.stack(rows)


def loop_jacobian(model, theta, X):
    """Rows ∇_θ f(x_i)[a] by a loop of fresh ``torch.autograd.grad`` calls; (n, p) or (n, k, p)."""
    mod, params = module_at(model, theta)
    rows = []
    for i in range(X.shape[0]):
        out = _outputs(mod, X[i:i + 1])[0]
        flat = out.reshape(-1)
        Ji = []
        for a in range(flat.numel()):
            gr = torch.autograd.grad(flat[a], params, retain_graph=True)
            Ji.append(torch.cat([t.reshape(-1) for t in gr]))
        rows.append(torch.stack(Ji) if out.ndim == 1 else Ji[0])
    return torch.stack(rows)


def loop_outputs(model, theta, X):
    mod, _ = module_at(model, theta)
    with torch.no_grad():
        return _outputs(mod, X)


def loop_ggn(model, theta, X, y, loss="mse"):
    """Dense G = (1/n) Σ_i J_iᵀ Λ_i J_i, Λ_i = ∇²_f ℓ_i from torch.autograd.functional.hessian."""
    J = loop_jacobian(model, theta, X)
    F = loop_outputs(model, theta, X)
    n, p = J.shape[0], J.shape[-1]
    G = torch.zeros(p, p, dtype=DT)
    for i in range(n):
        Ji = J[i] if J.ndim == 3 else J[i][None]
        fi = F[i].reshape(-1).clone()
        if J.ndim == 2:
            lam = torch.autograd.functional.hessian(lambda f: sample_loss_of_output(f[0], y[i], loss), fi)
        else:
            lam = torch.autograd.functional.hessian(lambda f: sample_loss_of_output(f, y[i], loss), fi)
        G += Ji.T @ lam @ Ji
    return G / n


def dense_loss_hessian(model, theta, X, y, loss="mse"):
    """∇²L(θ) by double backward through the module (torch.autograd.functional.hessian)."""
    mod, params = module_at(model, theta)
    shapes = [q.shape for q in params]
    names = [k for k, q in mod.named_parameters() if q.requires_grad]

    def L(th):
        chunks, k = {}, 0
        for name, s in zip(names, shapes):
            m = int(np.prod(s))
            chunks[name] = th[k:k + m].reshape(s)
            k += m
        out = _manual_forward(mod, chunks, X)
        if loss == "mse":
            return 0.5 * ((out - y) ** 2).reshape(X.shape[0], -1).sum(1).mean()
        return torch.nn.functional.cross_entropy(out, y)

    return torch.autograd.functional.hessian(L, theta.clone())


def _manual_forward(mod, P, X):
    """Hand-written forward of the test models (two_layer_net, one-hidden-layer mlp, linear)."""
    name = type(mod).__name__
    if name == "_TwoLayer":
        a = P["a"] if "a" in P else mod.a
        return mod.sigma(X @ P["W"].T) @ a
    if name == "_MLP":
        h = X.reshape(X.shape[0], -1)
        nl = len(mod.layers)
        for j in range(nl):
            h = h @ P[f"layers.{j}.weight"].T + P[f"layers.{j}.bias"]
            if j < nl - 1:
                h = mod.sigma(h)
        return h[:, 0] if h.shape[1] == 1 else h
    if name == "_Linear":
        return X @ P["theta"]
    raise NotImplementedError(name)


def dense_sigma1(grads):
    """Σ₁ = (1/n) Σ g_i g_iᵀ − ḡḡᵀ assembled with numpy, term by term."""
    g = np.asarray(grads, dtype=np.float64)
    n = g.shape[0]
    gbar = g.mean(0)
    return sum(np.outer(gi, gi) for gi in g) / n - np.outer(gbar, gbar)


def cov_within(samples, mean, target, n_se=5.0):
    """Entrywise check of an empirical covariance against ``target`` with a CLT tolerance.

    ``samples`` (N, p) are i.i.d. with known mean ``mean``; the unbiased estimator of
    the covariance is C_hat = (1/N) Σ (s − m)(s − m)ᵀ, each entry the mean of N i.i.d.
    products z_j z_k whose variance (a fourth moment) is estimated from the same
    samples. Returns (ok, max_z, C_hat) with max_z the largest |C_hat − target| in
    standard errors. With p(p+1)/2 ≤ 21 entries and the normal approximation, a
    correct implementation exceeds 5 SE with probability < 21 · 6e-7 ≈ 1e-5.
    """
    Z = np.asarray(samples, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    N = Z.shape[0]
    prods = Z[:, :, None] * Z[:, None, :]
    C = prods.mean(0)
    se = prods.std(0, ddof=1) / np.sqrt(N)
    target = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(C - target) / np.where(se > 0, se, 1), np.where(C == target, 0, np.inf))
    zmax = float(z.max())
    return zmax <= n_se, zmax, C


def models_for_tests():
    """(name, model, X, y, loss) at a random non-interpolating θ: scalar mse, multi-output mse, cross-entropy."""
    g = torch.Generator().manual_seed(1)
    n, d = 9, 4
    X = torch.randn(n, d, generator=g, dtype=DT)
    out = []
    m = ng.two_layer_net(d, 7, activation="tanh", train_outer=True, seed=3)
    out.append(("scalar_mse", m, X, torch.randn(n, generator=g, dtype=DT), "mse"))
    m = ng.mlp([d, 5, 3], activation="tanh", seed=4)
    out.append(("multi_mse", m, X, torch.randn(n, 3, generator=g, dtype=DT), "mse"))
    m = ng.mlp([d, 5, 3], activation="softplus", seed=5)
    out.append(("cross_entropy", m, X, torch.randint(0, 3, (n,), generator=g), "cross_entropy"))
    return out


def random_theta(model, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return model.theta0 + scale * torch.randn(model.p, generator=g, dtype=DT)


def enumerated_second_moment_map(X, eta, batch_size, replacement, W):
    """E[(I − ηH_b) W (I − ηH_b)] averaged over every minibatch b, H_b = (1/B) Σ_{i∈b} x_i x_iᵀ.

    All B-subsets (without replacement), all n^B ordered tuples (with), or the full
    batch (``batch_size=None``, GD): the exact one-step second-moment map of SGD on
    least squares at interpolation, by brute force.
    """
    X = np.asarray(X, dtype=float)
    W = np.asarray(W, dtype=float)
    n, d = X.shape
    if batch_size is None:
        batches = [tuple(range(n))]
    elif replacement:
        batches = list(itertools.product(range(n), repeat=batch_size))
    else:
        batches = list(itertools.combinations(range(n), batch_size))
    out = np.zeros((d, d))
    for b in batches:
        P = np.eye(d) - eta * X[list(b)].T @ X[list(b)] / len(b)
        out += P @ W @ P
    return out / len(batches)
