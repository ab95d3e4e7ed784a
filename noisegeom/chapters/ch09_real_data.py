"""Numerics of chapter 9, *Real data*: the book's measurements on images.

Chapter 9 repeats the measurements of chapters 3, 6 and 7 on scikit-learn's 8×8 digits
(and, through ``scripts/real_data.py``, on MNIST, Fashion-MNIST or CIFAR-10 read from disk),
with an MLP and a small CNN trained on the cross-entropy. This module adds

* :func:`digits_models`: the chapter's two networks for one seed;
* :func:`measure`: at one point θ, μ and μ_iso (for the cross-entropy with the Fisher
  normalisation of :meth:`noisegeom.NoiseGeometry.mu`), the top-k Hessian eigenpairs by
  Lanczos, and g along them, along random directions and along the flattest resolved
  eigen-directions of G;
* :func:`alignment_through_training`: :func:`measure` at chosen steps of a GD or SGD run;
* :func:`digits_sweep`: that, for both networks, SGD and GD and several seeds — the
  chapter's bands, precomputed by ``scripts/real_data.py digits``;
* :func:`escape_from_minimum`: GD or SGD started at a minimum θ⋆ of the square loss,
  the share of ‖θ_t − θ⋆‖² on the top-k Hessian eigenvectors at θ⋆ and on their
  complement, and the sharpness λ_max along the run.

Everything is a thin layer over the toolbox (``NoiseGeometry``, ``hessian_operator``,
``top_eigenpairs``, ``simulate``); tests/chapters/test_ch09_real_data.py checks it against
dense p×p computations.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import as_tensor, check_int, check_positive
from ..alignment import NoiseGeometry
from ..autodiff import LOSSES
from ..curvature import hessian_operator, top_eigenpairs
from ..models import FlatModel, mlp, small_cnn
from ..simulate import measure_along_run, simulate

__all__ = [
    "MLP_SIZES",
    "CNN_CHANNELS",
    "MAX_P_SPECTRUM",
    "digits_models",
    "normalization_of",
    "measure",
    "alignment_through_training",
    "escape_from_minimum",
    "DIGITS_RUN",
    "digits_sweep",
]

#: Layer sizes of the chapter's MLP (8×8 pixels → 16 tanh units → 10 classes).
MLP_SIZES = (64, 16, 10)
#: Channels of both convolutions of the chapter's CNN.
CNN_CHANNELS = 4
#: Largest p for which :func:`measure` computes all of G's spectrum (a p×p eigendecomposition).
MAX_P_SPECTRUM = 4096
# Eigenvalues of G below this fraction of the largest count as unresolved (rounding level)
_RESOLVED = 1e-6


def digits_models(seed: int = 0, *, image_shape=(1, 8, 8), n_classes: int = 10) -> dict:
    """The chapter's two networks, initialised with ``seed``: {'MLP': ..., 'CNN': ...}.

    The MLP has sizes ``MLP_SIZES`` (the input size follows ``image_shape``), tanh; the CNN is
    :func:`noisegeom.small_cnn` with ``CNN_CHANNELS`` channels. Both are small on purpose: the
    chapter measures five seeds of each on two CPU cores.
    """
    c, h, w = image_shape
    return {"MLP": mlp([c * h * w, MLP_SIZES[1], n_classes], seed=seed),
            "CNN": small_cnn(channels=CNN_CHANNELS, n_classes=n_classes, image_shape=image_shape, seed=seed)}


def normalization_of(loss: str) -> str:
    """The normalisation the chapter uses for a loss: 'fisher' for the cross-entropy, 'loss' for the square loss.

    For the cross-entropy Σ₁ = G when the labels are drawn from the model's own predictive
    distribution (chapter 9's proposition on the Fisher limit), so μ_F = Tr(Σ₁G)/‖G‖_F² → 1 is the
    natural reference; for the square loss perfect alignment is Σ₁ = 2L·G (chapter 3).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return "fisher" if loss == "cross_entropy" else "loss"


def _unit_columns(V: torch.Tensor) -> torch.Tensor:
    return V / torch.linalg.vector_norm(V, dim=0, keepdim=True)


def measure(model: FlatModel, theta, X, y, *, loss: str = "cross_entropy", k: int = 10, n_random: int = 10,
            seed: int = 0, tol: float = 1e-8) -> dict:
    """The noise geometry at one point θ: what chapter 9 records along a run.

    Parameters
    ----------
    model : FlatModel
    theta, X, y : arrays
        The point and the training data (class labels for the cross-entropy).
    loss : {'cross_entropy', 'mse'}
    k : int
        Number of Hessian eigen-directions (Lanczos, ``which='LA'``) and of flattest
        directions of G.
    n_random : int
        Number of random unit directions (uniform on the sphere of R^p, seeded).
    seed : int
        Seed of the Lanczos start vector and of the random directions.
    tol : float
        Lanczos tolerance.

    Returns
    -------
    dict
        ``loss``, ``accuracy``, ``label_prob_min``, ``label_prob_median`` (cross-entropy only, else
        nan: the smallest and the median over samples of p_{i,y_i}, the probability the model gives
        the sample's label), ``mu``, ``mu_iso``;
        ``hess_values``, ``hess_residuals`` (k,): top Hessian eigenvalues λ_j and ‖Hu_j − λ_ju_j‖;
        ``g_top`` (k,): g(u_j); ``g_iso_top`` (k,): (Tr Σ₁/p)/(s u_jᵀGu_j), what isotropic noise of
        the same trace would give; ``g_random`` (n_random,); ``g_bottom`` (k,) and ``G_bottom`` (k,):
        g along the eigenvectors of G with the k smallest eigenvalues above 10⁻⁶·λ_max(G) and those
        eigenvalues; ``G_top`` (k,): the k largest eigenvalues of G (these three are nan when
        p > ``MAX_P_SPECTRUM``: G's whole spectrum is a p×p eigendecomposition). Here s = 2L for the square
        loss and 1 for the cross-entropy (:func:`normalization_of`).
    """
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    norm = normalization_of(loss)
    k = check_int(k, "k", low=1, high=model.p)
    n_random = check_int(n_random, "n_random", low=1)
    geo = NoiseGeometry.from_model(model, theta, X, y, loss=loss)
    theta = as_tensor(theta, "theta", ndim=1)
    s = 2 * geo.loss if norm == "loss" else 1.0
    pairs = top_eigenpairs(hessian_operator(model, theta, X, y, loss=loss), k, seed=seed, tol=tol)
    U = torch.as_tensor(pairs.vectors.copy())
    uGu = (geo.factor_times(U) ** 2).sum(0).cpu().numpy() / geo.n
    gen = torch.Generator().manual_seed(int(seed))
    R = _unit_columns(torch.randn(model.p, n_random, dtype=torch.float64, generator=gen))
    # all of G's spectrum from the p×p matrix AᵀA (p < n·k for the chapter's networks); beyond
    # MAX_P_SPECTRUM parameters (an MLP on MNIST or CIFAR-10) the flattest directions are not computed
    if model.p <= MAX_P_SPECTRUM:
        lam, W = torch.linalg.eigh(geo.M / geo.n)
        bottom = torch.nonzero(lam > _RESOLVED * lam[-1]).flatten()[:k]
        g_bottom = np.atleast_1d(geo.g(W[:, bottom], normalization=norm))
        G_bottom, G_top = lam[bottom].cpu().numpy(), lam.flip(0)[:k].cpu().numpy()
    else:
        g_bottom = G_bottom = G_top = np.full(k, np.nan)
    if loss == "cross_entropy":
        with torch.no_grad():
            out = model.forward(theta, as_tensor(X, "X"))
        labels = torch.as_tensor(y, device=out.device)
        accuracy = float((out.argmax(1) == labels).double().mean())
        # p_{i,y_i}: the probability the model gives each sample's own label
        label_prob = torch.softmax(out, dim=1).gather(1, labels[:, None])[:, 0]
        prob_min, prob_median = float(label_prob.min()), float(label_prob.median())
    else:
        accuracy = prob_min = prob_median = float("nan")
    return {
        "loss": geo.loss, "accuracy": accuracy, "label_prob_min": prob_min, "label_prob_median": prob_median,
        "mu": geo.mu(normalization=norm), "mu_iso": geo.mu_isotropic(normalization=norm),
        "hess_values": pairs.values, "hess_residuals": pairs.residuals,
        "g_top": np.atleast_1d(geo.g(U, normalization=norm)),
        "g_iso_top": geo.trace_sigma1() / geo.p / (s * uGu),
        "g_random": np.atleast_1d(geo.g(R, normalization=norm)),
        "g_bottom": g_bottom, "G_bottom": G_bottom, "G_top": G_top,
    }


def alignment_through_training(model: FlatModel, X, y, theta0, *, eta: float, record_at,
                               batch_size: int | None = None, loss: str = "cross_entropy", k: int = 10,
                               n_random: int = 10, seed: int = 0) -> dict:
    """:func:`measure` at the steps ``record_at`` of a GD (``batch_size=None``) or SGD run.

    The run is :func:`noisegeom.measure_along_run` (segments of :func:`noisegeom.simulate`,
    minibatches without replacement, segment j seeded ``seed + j``); every measurement uses
    ``seed`` for its Lanczos start and random directions.

    Returns
    -------
    dict
        ``steps`` (R,) and every entry of :func:`measure` stacked over the R records.
    """
    steps, rows = measure_along_run(
        model, X, y, theta0, eta=eta, record_at=record_at, batch_size=batch_size, seed=seed, loss=loss,
        measure=lambda th: measure(model, th, X, y, loss=loss, k=k, n_random=n_random, seed=seed))
    out = {name: np.stack([np.asarray(r[name], dtype=float) for r in rows]) for name in rows[0]}
    out["steps"] = steps
    return out


def escape_from_minimum(model: FlatModel, X, y, theta_star, *, eta: float, steps: int,
                        batch_size: int | None = None, n_seeds: int = 1, k: int = 10, seed: int = 0,
                        record_every: int = 10, sharpness_every: int | None = None, start_noise: float = 1e-6,
                        directions=None) -> dict:
    """GD or SGD started next to a minimum θ⋆ of the square loss: where does θ_t − θ⋆ go?

    Each seed starts at θ⋆ + ε z (z a seeded standard Gaussian, ε = ``start_noise``: GD at an
    exact minimum would never move) and runs :func:`noisegeom.simulate`.

    Parameters
    ----------
    model : FlatModel
    X, y : arrays
        Training data and square-loss targets, (n,) or (n, k_out).
    theta_star : array (p,)
        A minimum (for instance from GD at a small rate, then :func:`noisegeom.find_minimum`).
    eta, steps, batch_size, n_seeds, seed, record_every
        As in :func:`noisegeom.simulate` (``batch_size=None`` is GD).
    k : int
        Number of top Hessian eigenvectors u_1..u_k at θ⋆ (Lanczos) that split ‖θ_t − θ⋆‖².
    sharpness_every : int, optional
        Also compute λ_max(H) (Lanczos) at every this many steps (a multiple of
        ``record_every``), for the median seed path; None: not at all.
    start_noise : float
        ε above.
    directions : array (p, k), optional
        The u_j, if already computed (then ``k`` is their number).

    Returns
    -------
    dict
        ``steps`` (R,); ``loss``, ``distance`` (R, S); ``top`` (R, S, k): the share of
        ‖θ_t − θ⋆‖² along each u_j; ``rest`` (R, S): the share outside span(u_1..u_k);
        ``hess_values`` (k,): λ_j at θ⋆; ``sharpness_steps``, ``sharpness`` (R', S): λ_max(H(θ_t)).
    """
    if not isinstance(model, FlatModel):
        raise TypeError(f"model must be a noisegeom FlatModel, got {type(model).__name__}")
    theta_star = as_tensor(theta_star, "theta_star", ndim=1)
    eta = check_positive(eta, "eta")
    n_seeds = check_int(n_seeds, "n_seeds", low=1)
    start_noise = check_positive(start_noise, "start_noise")
    if directions is None:
        k = check_int(k, "k", low=1, high=model.p)
        pairs = top_eigenpairs(hessian_operator(model, theta_star, X, y), k, seed=seed)
        U, lam = pairs.vectors, pairs.values
    else:
        U, lam = as_tensor(directions, "directions", ndim=2).numpy(), None
    gen = torch.Generator().manual_seed(int(seed))
    starts = theta_star + start_noise * torch.randn(n_seeds, model.p, dtype=torch.float64, generator=gen)
    record_theta = sharpness_every is not None
    tr = simulate(model, X, y, starts, eta=eta, steps=steps, batch_size=batch_size, n_seeds=n_seeds,
                  seed=seed, record_every=record_every, theta_ref=theta_star, directions=U,
                  record_theta=record_theta, on_divergence="ignore")
    frac = tr.energy_fraction()
    out = {"steps": tr.steps, "loss": tr.loss, "distance": tr.distance, "top": frac,
           "rest": np.clip(1.0 - frac.sum(-1), 0.0, 1.0), "hess_values": lam,
           "diverged_at": tr.diverged_at}
    if record_theta:
        every = check_int(sharpness_every, "sharpness_every", low=1)
        if every % record_every:
            raise ValueError(f"sharpness_every must be a multiple of record_every = {record_every}, got {every}")
        rows = [r for r, t in enumerate(tr.steps) if t % every == 0]
        sharp = np.full((len(rows), n_seeds), np.nan)
        for i, r in enumerate(rows):
            for j in range(n_seeds):
                th = torch.as_tensor(tr.theta[r, j])
                if torch.isfinite(th).all():
                    sharp[i, j] = top_eigenpairs(hessian_operator(model, th, X, y), 1, seed=seed).values[0]
        out["sharpness_steps"], out["sharpness"] = tr.steps[rows], sharp
    return out


#: The chapter's training runs on the digits: SGD with batches of 32 (without replacement)
#: and GD, both at this learning rate, measured at these steps.
DIGITS_RUN = {"eta": 1.0, "batch_size": 32, "record_at": (0, 100, 300, 1000), "k": 10, "n_random": 10}


def digits_sweep(X, y, *, seeds=range(5), models=("MLP", "CNN"), optimizers=("SGD", "GD"), progress=None,
                 **run) -> dict:
    """:func:`alignment_through_training` for every model, optimizer and seed: the chapter's bands.

    Seed s initialises the network (``digits_models(s)``) and seeds the run (minibatches,
    Lanczos start, random directions); the network's stream is derived from s apart from the
    run's (:func:`noisegeom.mlp`), so the two are independent.

    Parameters
    ----------
    X, y : arrays
        Training images (flat) and labels.
    seeds, models, optimizers : sequences
        What to run; optimizers from ('SGD', 'GD').
    progress : callable, optional
        Called as ``progress(model, optimizer, seed)`` before each run (the script passes a
        progress bar's update).
    **run
        Overrides of ``DIGITS_RUN`` (eta, batch_size, record_at, k, n_random).

    Returns
    -------
    dict
        ``{model: {optimizer: {name: array (S, R, ...)}}}`` with the entries of
        :func:`alignment_through_training` stacked over the seeds, plus ``p`` per model.
    """
    settings = {**DIGITS_RUN, **run}
    unknown = set(settings) - set(DIGITS_RUN)
    if unknown:
        raise TypeError(f"digits_sweep got unknown settings {sorted(unknown)}; allowed: {sorted(DIGITS_RUN)}")
    for o in optimizers:
        if o not in ("SGD", "GD"):
            raise ValueError(f"optimizers must be from ('SGD', 'GD'), got {o!r}")
    out = {}
    for name in models:
        out[name] = {}
        for opt in optimizers:
            runs = []
            for s in seeds:
                if progress is not None:
                    progress(name, opt, s)
                model = digits_models(s)[name]
                runs.append(alignment_through_training(
                    model, X, y, model.theta0, eta=settings["eta"], record_at=list(settings["record_at"]),
                    batch_size=settings["batch_size"] if opt == "SGD" else None, k=settings["k"],
                    n_random=settings["n_random"], seed=s))
            out[name][opt] = {key: np.stack([r[key] for r in runs]) for key in runs[0]}
        out[name]["p"] = digits_models(0)[name].p
    return out
