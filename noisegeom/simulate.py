"""GD, SGD and GD with injected noise, vectorised over seeds.

One call runs ``n_seeds`` independent trajectories in lockstep with
``torch.func.vmap``: every seed draws its own minibatches (or noise) from one
seeded generator, so a run is reproducible and a band over seeds costs about
as much as one run of a batched model.

Update rules (θ ∈ R^p, per-sample losses ℓ_i, L = (1/n) Σ ℓ_i):

* GD: θ ← θ − η ∇L(θ)                                   (``batch_size=None``)
* SGD: θ ← θ − η (1/B) Σ_{i∈b} ∇ℓ_i(θ), b a random minibatch (with or without replacement)
* GD + injected noise: θ ← θ − η (∇L(θ) + ξ), ξ ~ N(0, C) with Tr C = Tr Σ_B(θ)
  and C shaped by ``noise``: ``'sgd_covariance'`` (C = Σ_B), ``'isotropic'``
  (C ∝ I), ``'diagonal'`` (C = diag Σ_B), ``'gauss_newton'`` (C ∝ G, which equals H
  for least squares and near an interpolating minimum), ``'top_eigenvector'``
  (C ∝ u₁u₁ᵀ, u₁ the top eigenvector of G). These compare noise *shapes* at
  equal noise *size*, as in Zhu et al. (2019).

Devices: a run happens on the device of X (CUDA when X is there; the model must be there
too, and θ₀, y, ``theta_ref`` and ``directions`` are moved there). Minibatches and noise
are drawn by a generator on that device, so a CUDA run is reproducible from ``seed`` but
draws other numbers than a CPU run; GD is deterministic on both. The records are numpy
arrays on the host, copied at each record step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import grad, vmap

from ._checks import (DTYPE, as_tensor, check_batch_size, check_int, check_positive, device_of, follow_device,
                      seeded_generator)
from .autodiff import _check_inputs, _losses_of_outputs, _sample_loss, jacobian, loss_value, residuals
from .models import FlatModel
from .noise import _draw_batches, batch_noise_factor

__all__ = ["Trajectory", "DivergenceError", "simulate", "NOISE_SHAPES", "measure_along_run", "find_minimum"]

NOISE_SHAPES = ("sgd_covariance", "isotropic", "diagonal", "gauss_newton", "top_eigenvector")


# Seed-samples (runs × samples) in one full-data pass of simulate; more are taken in chunks.
_FULL_CHUNK = 2 ** 14


class DivergenceError(RuntimeError):
    """Raised by :func:`simulate` with ``on_divergence='raise'``; ``.trajectory`` keeps the records."""

    def __init__(self, message: str, trajectory: "Trajectory"):
        super().__init__(message)
        self.trajectory = trajectory


@dataclass
class Trajectory:
    """Records of a batch of runs; R records, S seeds, k directions.

    Attributes
    ----------
    steps : ndarray (R,)
        Step index of each record (0 is the start).
    loss : ndarray (R, S)
        Full-data loss L(θ_t).
    theta : ndarray (R, S, p) or None
        Iterates, if ``record_theta``.
    distance : ndarray (R, S) or None
        ‖θ_t − θ_ref‖, if ``theta_ref`` was given.
    energy : ndarray (R, S, k) or None
        ((θ_t − θ_ref)·u_j)² for the given directions u_j.
    escaped_at, diverged_at : ndarray (S,) of int
        First step at which the loss exceeded ``escape_loss`` / the iterate
        became non-finite; −1 if never. From that step on a seed is frozen:
        its records repeat its last (finite) state.
    final_theta : ndarray (S, p)
        Last iterate of every seed.
    message : str
        Summary of escapes and divergences ('' if none).
    """

    steps: np.ndarray
    loss: np.ndarray
    theta: np.ndarray | None
    distance: np.ndarray | None
    energy: np.ndarray | None
    escaped_at: np.ndarray
    diverged_at: np.ndarray
    final_theta: np.ndarray
    message: str = ""
    params: dict = field(default_factory=dict)

    def energy_fraction(self) -> np.ndarray:
        """energy / distance², shape (R, S, k): the share of ‖θ_t − θ_ref‖² along each direction."""
        if self.energy is None or self.distance is None:
            raise ValueError("energy_fraction needs a run with theta_ref and directions")
        d2 = self.distance[..., None] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(d2 > 0, self.energy / np.where(d2 > 0, d2, 1.0), 0.0)


def _schedule(eta, steps: int) -> np.ndarray:
    if callable(eta):
        vals = np.array([float(eta(t)) for t in range(steps)])
    elif np.ndim(eta) == 0:
        vals = np.full(steps, check_positive(eta, "eta"))
    else:
        vals = np.asarray(eta, dtype=float)
        if vals.shape != (steps,):
            raise ValueError(f"eta must be a number, a callable or an array of length steps = {steps}, "
                             f"got shape {vals.shape}")
    if not np.all(np.isfinite(vals)) or (vals <= 0).any():
        raise ValueError("eta must be finite and > 0 at every step")
    return vals


def simulate(model: FlatModel, X, y, theta0, *, eta, steps: int, batch_size: int | None = None,
             replacement: bool = False, noise: str | None = None, n_seeds: int = 1, seed: int = 0,
             loss: str = "mse", record_every: int = 1, record_theta: bool = False,
             theta_ref=None, directions=None, escape_loss: float | None = None,
             on_divergence: str = "warn") -> Trajectory:
    """Run GD, SGD or GD with injected noise for ``n_seeds`` seeds at once.

    Parameters
    ----------
    model : FlatModel
    X, y : arrays
        Training data (n samples).
    theta0 : array, shape (p,) or (n_seeds, p)
        Starting point(s).
    eta : float, array of shape (steps,), or callable t ↦ η_t
        Learning rate or schedule (chapter 8 uses cyclical schedules).
    steps : int
        Number of updates.
    batch_size : int, optional
        B. ``None`` means full-batch GD.
    replacement : bool
        Minibatches with replacement (default: without).
    noise : str, optional
        One of ``NOISE_SHAPES``: GD plus Gaussian noise of the given shape with
        the trace of Σ_B (needs ``batch_size``; square loss, scalar output).
    n_seeds, seed : int
        Number of independent runs and the seed of their randomness.
    loss : {'mse', 'cross_entropy'}
    record_every : int
        Record every this many steps (and the last step).
    record_theta : bool
        Keep the iterates (memory R·S·p).
    theta_ref : array (p,), optional
        Reference point θ* for ``distance`` and ``energy``.
    directions : array (p, k), optional
        Directions u_j (e.g. Hessian eigenvectors) on which to record the energy
        of θ_t − θ_ref. Requires ``theta_ref``.
    escape_loss : float, optional
        Freeze a seed once its loss exceeds this value and record the step in
        ``escaped_at`` (an escape experiment needs no more than that).
    on_divergence : {'warn', 'raise', 'ignore'}
        What to do when a seed becomes non-finite: it is always frozen at its
        last finite iterate; 'warn' issues a warning with the message, 'raise'
        raises :class:`DivergenceError` carrying the records so far.

    Returns
    -------
    Trajectory
        numpy arrays on the host, whatever the device of the run (see the module docstring).
    """
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    dev = device_of(X)
    theta_chk, X, y = _check_inputs(model, follow_device(model.theta0, dev), X, follow_device(y, dev), loss)
    n = X.shape[0]
    steps = check_int(steps, "steps", low=1)
    S = check_int(n_seeds, "n_seeds", low=1)
    record_every = check_int(record_every, "record_every", low=1)
    etas = _schedule(eta, steps)
    if batch_size is not None:
        B = check_batch_size(batch_size, n)
    if noise is not None:
        if noise not in NOISE_SHAPES:
            raise ValueError(f"noise must be None or one of {NOISE_SHAPES}, got {noise!r}")
        if batch_size is None:
            raise ValueError("noise needs batch_size: the injected noise has the trace of Σ_B")
        if loss != "mse":
            raise ValueError("injected noise is implemented for the square loss only")
    if on_divergence not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_divergence must be 'warn', 'raise' or 'ignore', got {on_divergence!r}")

    th = as_tensor(follow_device(theta0, dev), "theta0", ndim=(1, 2))
    if th.shape[-1] != model.p:
        raise ValueError(f"theta0 must have p = {model.p} entries per row, got shape {tuple(th.shape)}")
    th = th.expand(S, model.p).clone() if th.ndim == 1 else th.clone()
    if th.shape[0] != S:
        raise ValueError(f"theta0 of shape (n_seeds, p) must have n_seeds = {S} rows, got {th.shape[0]}")
    ref = None if theta_ref is None else as_tensor(follow_device(theta_ref, dev), "theta_ref", ndim=1)
    if ref is not None and ref.numel() != model.p:
        raise ValueError(f"theta_ref must have length p = {model.p}, got {ref.numel()}")
    U = None
    if directions is not None:
        if ref is None:
            raise ValueError("directions needs theta_ref (energy is measured on θ_t − θ_ref)")
        U = as_tensor(follow_device(directions, dev), "directions", ndim=(1, 2))
        U = U[:, None] if U.ndim == 1 else U
        if U.shape[0] != model.p:
            raise ValueError(f"directions must have p = {model.p} rows, got shape {tuple(U.shape)}")
    if escape_loss is not None:
        escape_loss = check_positive(escape_loss, "escape_loss")

    ell = _sample_loss(model, loss)

    def seed_losses(theta, xb, yb, per_theta):
        # L of every seed from one batched forward pass over all seeds (FlatModel.forward_batched:
        # a plain pass for the book's small models, where vmap's per-call overhead would dominate)
        out = model.forward_batched(theta, xb, per_theta=per_theta)       # (S, B) or (S, B, k)
        S, b = out.shape[:2]
        yb = yb.expand(S, *yb.shape) if not per_theta else yb
        return _losses_of_outputs(out.reshape(S * b, *out.shape[2:]), yb.reshape(S * b, *yb.shape[2:]),
                                  loss).view(S, b).mean(1)

    # Full-data passes over more than _FULL_CHUNK seed-samples run in chunks of samples (a CNN on
    # 60,000 images in one pass holds tens of GB of activations); the book's problems are one chunk,
    # so their numbers do not depend on it
    chunk = max(1, _FULL_CHUNK // S)
    pieces = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]

    def full_loss(theta, xb, yb):
        if len(pieces) == 1:
            return seed_losses(theta, xb, yb, False)
        with torch.no_grad():
            return sum(seed_losses(theta, xb[a:b], yb[a:b], False) * ((b - a) / n) for a, b in pieces)

    def batch_loss(theta, xb, yb):
        return seed_losses(theta, xb, yb, True)

    ones_S = torch.ones(S, dtype=DTYPE, device=dev)

    def seed_gradients(losses_of, theta, xb, yb):
        # the S runs are independent, so the gradient of the sum of their losses holds each run's
        # own gradient in its row; plain autograd through the batched forward costs less per step
        # than torch.func.grad, whose wrapping dominates for small models
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            # backward from the S losses with unit weights: as .sum() then backward, without
            # autograd's construction of the scalar's gradient on every call
            return torch.autograd.grad(losses_of(theta, xb, yb), theta, grad_outputs=ones_S)[0]

    def full_grad(theta, xb, yb):
        if len(pieces) == 1:
            return seed_gradients(full_loss, theta, xb, yb)
        # ∇L = Σ_chunks (n_c/n) ∇L_c: one backward pass per chunk
        return sum(seed_gradients(batch_of_all, theta, xb[a:b], yb[a:b]) * ((b - a) / n) for a, b in pieces)

    def batch_of_all(theta, xb, yb):
        return seed_losses(theta, xb, yb, False)

    def batch_grad(theta, xb, yb):
        return seed_gradients(batch_loss, theta, xb, yb)
    per_sample = vmap(vmap(grad(ell), in_dims=(None, 0, 0)), in_dims=(0, None, None))
    jac = vmap(vmap(torch.func.jacrev(lambda t, x: model.forward(t, x[None])[0]), in_dims=(None, 0)),
               in_dims=(0, None))
    gen = seeded_generator(int(seed), dev)
    c = batch_noise_factor(n, B, replacement=replacement) if batch_size is not None else 0.0

    def injected(theta):
        Gr = per_sample(theta, X, y)                       # (S, n, p)
        centred = Gr - Gr.mean(1, keepdim=True)
        diag = c * (centred ** 2).mean(1)                  # diag Σ_B, (S, p)
        tr = diag.sum(1, keepdim=True)                     # Tr Σ_B, (S, 1)
        if noise == "sgd_covariance":
            z = torch.randn(S, n, generator=gen, dtype=DTYPE, device=dev)
            return (c / n) ** 0.5 * torch.einsum("snp,sn->sp", centred, z)
        if noise == "isotropic":
            return (tr / model.p).sqrt() * torch.randn(S, model.p, generator=gen, dtype=DTYPE, device=dev)
        if noise == "diagonal":
            return diag.sqrt() * torch.randn(S, model.p, generator=gen, dtype=DTYPE, device=dev)
        J = jac(theta, X)                                  # (S, n, p)
        if noise == "gauss_newton":
            trG = (J ** 2).sum((1, 2))[:, None] / n
            z = torch.randn(S, n, generator=gen, dtype=DTYPE, device=dev)
            return (tr / trG.clamp_min(1e-300)).sqrt() * torch.einsum("snp,sn->sp", J, z) / n ** 0.5
        K = J @ J.transpose(1, 2)
        _, vecs = torch.linalg.eigh(K)
        u = torch.einsum("snp,sn->sp", J, vecs[:, :, -1])
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return tr.sqrt() * torch.randn(S, 1, generator=gen, dtype=DTYPE, device=dev) * u

    rec_steps, rec_loss, rec_theta, rec_dist, rec_energy = [], [], [], [], []
    escaped = np.full(S, -1)
    diverged = np.full(S, -1)
    active = torch.ones(S, dtype=torch.bool, device=dev)

    def record(t, L):
        rec_steps.append(t)
        rec_loss.append(L.cpu().numpy().copy())
        if record_theta:
            rec_theta.append(th.cpu().numpy().copy())
        if ref is not None:
            diff = th - ref
            rec_dist.append(diff.norm(dim=1).cpu().numpy().copy())
            if U is not None:
                rec_energy.append(((diff @ U) ** 2).cpu().numpy().copy())

    drawn_at_once = max(1, 2 ** 20 // (S * n))           # steps of minibatch indices drawn at once
    L = full_loss(th, X, y)
    if not bool(torch.isfinite(L).all()):
        raise ValueError("the loss at theta0 is not finite for X and y (their scale overflows float64, or the "
                         "model's output does): rescale theta0, X or y")
    record(0, L)
    last = 0
    for t in range(steps):
        if batch_size is None:
            g = full_grad(th, X, y)
        elif noise is None:
            if t % drawn_at_once == 0:
                # the minibatches of the next steps in one draw: the generator yields the same
                # numbers as one draw of S batches per step, without the per-call overhead
                ahead = min(drawn_at_once, steps - t)
                drawn = _draw_batches(n, B, ahead * S, replacement, gen, dev).view(ahead, S, B)
            idx = drawn[t % drawn_at_once]
            g = batch_grad(th, X[idx], y[idx])
        else:
            g = full_grad(th, X, y) + injected(th)
        new = th - etas[t] * g
        need_loss = escape_loss is not None or (t + 1) % record_every == 0 or t + 1 == steps
        finite = torch.isfinite(new).all(1)
        L_new = full_loss(new, X, y) if need_loss else None
        if L_new is not None:
            finite &= torch.isfinite(L_new)
        bad = active & ~finite
        diverged[bad.cpu().numpy()] = t + 1
        step_ok = active & finite
        th = torch.where(step_ok[:, None], new, th)
        if L_new is not None:
            L = torch.where(step_ok, L_new, L)
        active &= finite
        if escape_loss is not None:
            esc = active & (L > escape_loss)
            escaped[esc.cpu().numpy()] = t + 1
            active &= ~esc
        last = t + 1
        if (t + 1) % record_every == 0 or t + 1 == steps or not bool(active.any()):
            record(t + 1, L)
        if not bool(active.any()):
            break

    parts = []
    if (escaped >= 0).any():
        parts.append(f"{int((escaped >= 0).sum())} of {S} runs escaped (loss > {escape_loss:g}) "
                     f"by step {int(escaped.max())}")
    if (diverged >= 0).any():
        parts.append(f"{int((diverged >= 0).sum())} of {S} runs diverged (non-finite iterate or loss) "
                     f"at steps {sorted(set(diverged[diverged >= 0].tolist()))[:5]}; each is frozen at "
                     f"its last finite iterate")
    if last < steps:
        parts.append(f"stopped at step {last} of {steps}: no run left active")
    traj = Trajectory(
        steps=np.array(rec_steps), loss=np.stack(rec_loss),
        theta=np.stack(rec_theta) if record_theta else None,
        distance=np.stack(rec_dist) if ref is not None else None,
        energy=np.stack(rec_energy) if U is not None else None,
        escaped_at=escaped, diverged_at=diverged, final_theta=th.cpu().numpy().copy(),
        message="; ".join(parts),
        params=dict(eta=etas, steps=steps, batch_size=batch_size, replacement=replacement,
                    noise=noise, n_seeds=S, seed=seed, loss=loss),
    )
    if (diverged >= 0).any():
        if on_divergence == "raise":
            raise DivergenceError(traj.message, traj)
        if on_divergence == "warn":
            warnings.warn(traj.message, RuntimeWarning, stacklevel=2)
    return traj


def measure_along_run(model: FlatModel, X, y, theta0, *, eta: float, record_at, measure,
                      batch_size: int | None = None, replacement: bool = False, seed: int = 0,
                      loss: str = "mse"):
    """Run GD or SGD with :func:`simulate` and call ``measure(θ_t)`` at chosen steps.

    The run is simulated in segments between consecutive steps of ``record_at``
    (non-negative, strictly increasing; 0 is the start); segment j uses seed
    ``seed + j``. A diverging run raises :class:`noisegeom.DivergenceError`.
    Chapters 3, 6 and 9 record their measurements through it: ``measure`` can be
    anything a point θ_t allows, for example :class:`noisegeom.NoiseGeometry` metrics.
    ``loss`` is the training loss, as in :func:`simulate`. θ_t is passed on the device of X
    (as the runs are).

    Returns
    -------
    (steps, rows)
        The steps as an integer array and the list of ``measure`` results.
    """
    eta = check_positive(eta, "eta")
    steps = np.asarray(record_at)
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"record_at must be a non-empty 1-D sequence of integers, got {record_at!r}")
    if steps[0] < 0 or (np.diff(steps) <= 0).any():
        raise ValueError("record_at must be non-negative and strictly increasing")
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    theta = as_tensor(follow_device(theta0, device_of(X)), "theta0", ndim=1)
    if theta.numel() != model.p:
        raise ValueError(f"theta0 must have length p = {model.p}, got {theta.numel()}")
    rows, t = [], 0
    for j, target in enumerate(steps.tolist()):
        if target > t:
            traj = simulate(model, X, y, theta, eta=eta, steps=target - t, batch_size=batch_size,
                            replacement=replacement, seed=seed + j, record_every=target - t,
                            loss=loss, on_divergence="raise")
            theta = torch.as_tensor(traj.final_theta[0], device=theta.device)
            t = target
        rows.append(measure(theta))
    return steps.copy(), rows


def find_minimum(model: FlatModel, X, y, theta0, *, eta: float, steps: int, polish_steps: int = 5,
                 tol: float = 1e-20) -> torch.Tensor:
    """A minimum near θ₀: GD at learning rate η, then Gauss–Newton steps (chapters 7 and 8).

    GD (``steps`` steps of :func:`simulate`) brings the loss down;
    then up to ``polish_steps`` minimum-norm Gauss–Newton steps
    θ ← θ − J⁺ e take an over-parameterized model (n ≤ p, J of full row rank)
    to an interpolating point to machine precision, moving as little as possible.
    Stops early once L ≤ tol. Square loss; with k outputs the n·k residuals and the n·k rows
    of J take the place of e and J (an interpolating point needs n·k ≤ p).

    Returns
    -------
    torch.Tensor, shape (p,)
        On the device of X.
    """
    dev = device_of(X)
    theta0, X, y = _check_inputs(model, follow_device(theta0, dev), X, follow_device(y, dev))
    steps = check_int(steps, "steps", low=0)
    polish_steps = check_int(polish_steps, "polish_steps", low=0)
    tol = check_positive(tol, "tol", allow_zero=True)
    th = theta0
    if steps > 0:
        tr = simulate(model, X, y, theta0, eta=eta, steps=steps, record_every=steps, on_divergence="raise")
        th = torch.as_tensor(tr.final_theta[0], dtype=DTYPE, device=theta0.device)
    for _ in range(polish_steps):
        if loss_value(model, th, X, y) <= tol:
            break
        # k outputs: the n·k residuals against the n·k rows of J, the same least-squares step
        e = residuals(model, th, X, y).reshape(-1)
        J = jacobian(model, th, X).reshape(e.shape[0], -1)
        # gelsd (SVD, minimum norm for n < p) exists on the CPU only: a GPU's J goes to the host
        # for it (n·p numbers, little next to the SVD), which also gives the CPU's step exactly
        step = torch.linalg.lstsq(J.cpu(), e[:, None].cpu(), driver="gelsd").solution.to(th.device)
        th = th - step[:, 0]
    return th
