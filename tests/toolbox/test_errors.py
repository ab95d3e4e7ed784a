"""Bad inputs to every public function of the toolbox (`import noisegeom`) give a clear error that
names the argument. The chapter modules' bad inputs are tested in tests/chapters/."""

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.sparse.linalg import aslinearoperator
from torch import nn

import noisegeom as ng

DT = torch.float64
g = torch.Generator().manual_seed(0)
X = torch.randn(6, 3, generator=g, dtype=DT)
Y = torch.randn(6, generator=g, dtype=DT)
LIN = ng.linear_model(3)
TH = torch.randn(3, generator=g, dtype=DT)
NAN3 = torch.tensor([1.0, float("nan"), 0.0], dtype=DT)
MLP = ng.mlp([3, 4, 3])
GRADS = torch.randn(6, 3, generator=g, dtype=DT)
GEO = ng.NoiseGeometry.square_loss(X, X @ TH - Y)
M = np.diag([3.0, 2.0, 1.0])
NO_DATA = Path(__file__).parent                               # a folder without MNIST or CIFAR-10 files


def _xnan():
    Xn = X.clone()
    Xn[2, 1] = float("inf")
    return Xn


CASES = {
    # models
    "linear_model d=0": (lambda: ng.linear_model(0), ValueError, r"d must be >= 1, got 0"),
    "linear_model d float": (lambda: ng.linear_model(2.5), TypeError, r"d must be an integer"),
    "deep_linear depth": (lambda: ng.deep_linear_model(3, depth=0), ValueError, r"depth must be >= 1"),
    "deep_linear width": (lambda: ng.deep_linear_model(3, width=0), ValueError, r"width must be >= 1"),
    "two_layer width": (lambda: ng.two_layer_net(3, 0), ValueError, r"width must be >= 1"),
    "two_layer activation": (lambda: ng.two_layer_net(3, 4, activation="swish"), ValueError,
                             r"activation must be one of .* got 'swish'"),
    "mlp one size": (lambda: ng.mlp([3]), ValueError, r"sizes must list at least input and output"),
    "mlp zero size": (lambda: ng.mlp([3, 0]), ValueError, r"sizes\[i\] must be >= 1"),
    "small_cnn channels": (lambda: ng.small_cnn(channels=0), ValueError, r"channels must be >= 1"),
    "small_cnn image_shape": (lambda: ng.small_cnn(image_shape=(28, 28)), ValueError, r"image_shape must be"),
    "small_cnn tiny image": (lambda: ng.small_cnn(image_shape=(1, 1, 8)), ValueError, r"image_shape must have"),
    "small_cnn image_shape float": (lambda: ng.small_cnn(image_shape=(1, 2.5, 3)), TypeError,
                                    r"image_shape\[i\] must be an integer, got 2\.5"),
    "FlatModel not module": (lambda: ng.FlatModel(object()), TypeError, r"module must be a torch.nn.Module"),
    "FlatModel no params": (lambda: ng.FlatModel(nn.ReLU()), ValueError, r"no trainable parameters"),
    "FlatModel theta length": (lambda: LIN(torch.zeros(4, dtype=DT), X), ValueError, r"theta must .*p = 3"),
    "FlatModel.to name": (lambda: ng.linear_model(3).to("gpu"), ValueError,
                          r"device must name a torch device such as 'cpu' or 'cuda:0', got 'gpu'"),
    "FlatModel.to type": (lambda: ng.linear_model(3).to(torch.float32), TypeError,
                          r"device must be a str, int or torch.device"),
    # data
    "power_law d": (lambda: ng.power_law_spectrum(0), ValueError, r"d must be >= 1"),
    "power_law alpha": (lambda: ng.power_law_spectrum(5, -1.0), ValueError, r"alpha must be finite and >= 0"),
    "power_law rank": (lambda: ng.power_law_spectrum(5, rank=6), ValueError, r"rank must be <= 5"),
    "eff dim negative": (lambda: ng.effective_dimension([-1.0, 1.0]), ValueError, r"spectrum must be non-negative"),
    "eff dim zero": (lambda: ng.effective_dimension([0.0, 0.0]), ValueError, r"spectrum is identically zero"),
    "eff dim 2-D": (lambda: ng.effective_dimension(np.ones((2, 2))), ValueError, r"spectrum must be 1-D"),
    "gaussian n": (lambda: ng.gaussian_inputs(0, [1.0]), ValueError, r"n must be >= 1"),
    "gaussian negative": (lambda: ng.gaussian_inputs(3, [-1.0]), ValueError, r"spectrum must be non-negative"),
    "gaussian nan": (lambda: ng.gaussian_inputs(3, [np.nan]), ValueError, r"spectrum contains non-finite"),
    "teacher length": (lambda: ng.teacher_labels(X, torch.ones(2, dtype=DT)), ValueError,
                       r"theta_star must have length d = 3"),
    "teacher noise": (lambda: ng.teacher_labels(X, TH, noise_std=-1.0), ValueError, r"noise_std must be"),
    "digits fraction": (lambda: ng.load_digits(test_fraction=1.5), ValueError, r"test_fraction must lie in"),
    "mnist root type": (lambda: ng.load_mnist(3), TypeError, r"root must be a path to a folder .* got int"),
    "mnist root missing": (lambda: ng.load_mnist(NO_DATA / "absent"), FileNotFoundError,
                           r"root must be an existing folder, got .*absent"),
    "mnist kind": (lambda: ng.load_mnist(NO_DATA, kind="kmnist"), ValueError,
                   r"kind must be 'mnist' or 'fashion', got 'kmnist'"),
    "mnist train": (lambda: ng.load_mnist(NO_DATA, train="yes"), TypeError, r"train must be True or False"),
    "mnist limit": (lambda: ng.load_mnist(NO_DATA, limit=0), ValueError, r"limit must be >= 1, got 0"),
    "mnist no files": (lambda: ng.load_mnist(NO_DATA), FileNotFoundError,
                       r"train-images-idx3-ubyte not found; looked for .*MNIST/raw/train-images-idx3-ubyte\.gz"),
    "cifar root type": (lambda: ng.load_cifar10(None), TypeError, r"root must be a path to a folder"),
    "cifar standardize": (lambda: ng.load_cifar10(NO_DATA, standardize=1), TypeError,
                          r"standardize must be True or False"),
    "cifar limit": (lambda: ng.load_cifar10(NO_DATA, limit=2.5), TypeError, r"limit must be an integer"),
    "cifar no files": (lambda: ng.load_cifar10(NO_DATA, train=False), FileNotFoundError,
                       r"test_batch not found; looked for .*cifar-10-batches-py/test_batch"),
    # autodiff
    "psg model type": (lambda: ng.per_sample_gradients(nn.Linear(3, 1), TH, X, Y), TypeError,
                       r"model must be a noisegeom FlatModel"),
    "psg theta length": (lambda: ng.per_sample_gradients(LIN, torch.zeros(5, dtype=DT), X, Y), ValueError,
                         r"theta must have length p = 3, got 5"),
    "psg theta device": (lambda: ng.per_sample_gradients(LIN, TH.to("meta"), X, Y), ValueError,
                         r"theta is on meta but X on cpu; move them to one device"),
    "psg y device": (lambda: ng.per_sample_gradients(LIN, TH, X, Y.to("meta")), ValueError,
                     r"y is on meta but X on cpu; move them to one device"),
    "psg theta nan": (lambda: ng.per_sample_gradients(LIN, NAN3, X, Y), ValueError,
                      r"theta contains non-finite"),
    "psg X inf": (lambda: ng.per_sample_gradients(LIN, TH, _xnan(), Y), ValueError, r"X contains non-finite"),
    "psg y rows": (lambda: ng.per_sample_gradients(LIN, TH, X, Y[:4]), ValueError,
                   r"y must have one entry per sample: X has 6 rows"),
    "psg y nan": (lambda: ng.per_sample_gradients(LIN, TH, X, Y * np.nan), ValueError,
                  r"y contains non-finite"),
    "psg loss": (lambda: ng.per_sample_gradients(LIN, TH, X, Y, loss="hinge"), ValueError,
                 r"loss must be one of \('mse', 'cross_entropy'\), got 'hinge'"),
    "psg ce float labels": (lambda: ng.per_sample_gradients(MLP, MLP.theta0, X, Y, loss="cross_entropy"),
                            TypeError, r"y must hold integer class labels"),
    "psg chunk": (lambda: ng.per_sample_gradients(LIN, TH, X, Y, chunk_size=0), ValueError,
                  r"chunk_size must be >= 1"),
    "residuals shape": (lambda: ng.residuals(LIN, TH, X, Y[:, None].repeat(1, 2)), ValueError,
                        r"y must have shape \(6,\) like the model's outputs \(or \(n, 1\) for a scalar model\), "
                        r"got \(6, 2\)"),
    "losses shape": (lambda: ng.per_sample_losses(MLP, MLP.theta0, X, Y), ValueError,
                     r"y must have shape \(6, 3\) like the model's outputs"),
    "jacobian chunk": (lambda: ng.jacobian(LIN, TH, X, chunk_size=-1), ValueError, r"chunk_size must be >= 1"),
    "jacobian empty X": (lambda: ng.jacobian(LIN, TH, X[:0]), ValueError, r"X must hold at least one sample"),
    "ggn ce scalar": (lambda: ng.ggn_factor(LIN, TH, X, torch.zeros(6, dtype=torch.long), loss="cross_entropy"),
                      ValueError, r"needs a model with at least 2 outputs"),
    "psg route": (lambda: ng.per_sample_gradients(LIN, TH, X, Y, route="unfold"), ValueError,
                  r"route must be one of \('auto', 'layerwise', 'vmap'\), got 'unfold'"),
    "jacobian route None": (lambda: ng.jacobian(LIN, TH, X, route=None), ValueError, r"route must be one of"),
    "ggn route layerwise": (lambda: ng.ggn_factor(LIN, TH, X, Y, route="layerwise"), ng.NotLayerwiseError,
                            r"route='layerwise' does not apply to this model: the parameter at θ\[0:3\] is not the "
                            r"weight or bias of a linear layer or a 1-D/2-D convolution"),
    # noise
    "factor B=0": (lambda: ng.batch_noise_factor(5, 0), ValueError, r"batch_size must be >= 1, got 0"),
    "factor B>n": (lambda: ng.batch_noise_factor(5, 6), ValueError, r"batch_size must be <= 5, got 6"),
    "factor n=0": (lambda: ng.batch_noise_factor(0, 1), ValueError, r"n must be >= 1"),
    "factor B float": (lambda: ng.batch_noise_factor(5, 2.0), TypeError, r"batch_size must be an integer"),
    "covariance 1-D": (lambda: ng.noise_covariance(torch.ones(3, dtype=DT)), ValueError,
                       r"grads must be 2-D, got shape \(3,\)"),
    "covariance nan": (lambda: ng.noise_covariance(GRADS * np.nan), ValueError, r"grads contains non-finite"),
    "covariance B>n": (lambda: ng.noise_covariance(GRADS, batch_size=7), ValueError, r"batch_size must be <= 6"),
    "operator B=0": (lambda: ng.noise_covariance_operator(GRADS, batch_size=0), ValueError,
                     r"batch_size must be >= 1"),
    "sample_batches B": (lambda: ng.sample_batches(5, 6, 3), ValueError, r"batch_size must be <= 5"),
    "sample_batches num": (lambda: ng.sample_batches(5, 2, 0), ValueError, r"num_batches must be >= 1"),
    "minibatch B": (lambda: ng.minibatch_gradients(GRADS, 0, 3), ValueError, r"batch_size must be >= 1"),
    # curvature
    "gn factor rows": (lambda: ng.gauss_newton_operator(torch.ones(7, 3, dtype=DT), n=3), ValueError,
                       r"factor has 7 rows, not a multiple of n = 3"),
    "gn factor 1-D": (lambda: ng.gauss_newton_matrix(torch.ones(3, dtype=DT)), ValueError, r"factor must be 2-D"),
    "gn factor nan": (lambda: ng.gauss_newton_matrix(GRADS * np.nan), ValueError, r"factor contains non-finite"),
    "hessian chunk": (lambda: ng.hessian_operator(LIN, TH, X, Y, chunk_size=0), ValueError,
                      r"chunk_size must be >= 1"),
    "hessian loss": (lambda: ng.hessian_matrix(LIN, TH, X, Y, loss="l1"), ValueError, r"loss must be one of"),
    "eig not square": (lambda: ng.top_eigenpairs(np.ones((3, 2))), ValueError,
                       r"op must be square, got shape \(3, 2\)"),
    "eig type": (lambda: ng.top_eigenpairs("H"), TypeError, r"op must be a scipy LinearOperator"),
    "eig k=0": (lambda: ng.top_eigenpairs(M, 0), ValueError, r"k must be >= 1"),
    "eig k>p": (lambda: ng.top_eigenpairs(M, 4), ValueError, r"k must be <= 3"),
    "eig nan": (lambda: ng.top_eigenpairs(M * np.nan), ValueError, r"op contains non-finite"),
    "hutchinson samples": (lambda: ng.hutchinson(M, 1), ValueError, r"num_samples must be >= 2"),
    "hutchinson quantity": (lambda: ng.hutchinson(M, quantity="det"), ValueError,
                            r"quantity must be 'trace' or 'frobenius2', got 'det'"),
    # alignment
    "geo factor cols": (lambda: ng.NoiseGeometry(GRADS, torch.ones(6, 4, dtype=DT), 1.0), ValueError,
                        r"factor must have p = 3 columns like grads"),
    "geo factor rows": (lambda: ng.NoiseGeometry(GRADS, torch.ones(7, 3, dtype=DT), 1.0), ValueError,
                        r"factor must have a multiple of n = 6 rows, got 7"),
    "geo zero loss": (lambda: ng.NoiseGeometry(GRADS, X, 0.0), ValueError, r"loss is zero.*0/0"),
    "geo nan loss": (lambda: ng.NoiseGeometry(GRADS, X, float("nan")), ValueError, r"loss is not finite"),
    "geo grads nan": (lambda: ng.NoiseGeometry(GRADS * np.nan, X, 1.0), ValueError, r"grads contains non-finite"),
    "square_loss e length": (lambda: ng.NoiseGeometry.square_loss(X, Y[:5]), ValueError,
                             r"e must have one entry per row of J \(6\), got 5"),
    "square_loss e zero": (lambda: ng.NoiseGeometry.square_loss(X, torch.zeros(6, dtype=DT)), ValueError,
                           r"0/0 at an interpolating point"),
    "from_model interpolating": (lambda: ng.NoiseGeometry.from_model(LIN, TH, X, X @ TH), ValueError,
                                 r"loss is zero: the alignment metrics are 0/0"),
    "average_alignment zero": (lambda: ng.average_alignment(X, torch.zeros(6, dtype=DT)), ValueError, r"0/0"),
    "g zero vector": (lambda: GEO.g(torch.zeros(3, dtype=DT)), ValueError, r"v column 0 is the zero vector"),
    "g wrong length": (lambda: GEO.g(torch.ones(4, dtype=DT)), ValueError, r"v must have p = 3 rows"),
    "g nan": (lambda: GEO.g(NAN3), ValueError, r"v contains non-finite"),
    "subspace not orthonormal": (lambda: GEO.g_subspace(torch.ones(3, 2, dtype=DT)), ValueError,
                                 r"V must have orthonormal columns"),
    "mu curvature type": (lambda: GEO.mu(M), TypeError, r"curvature must be a scipy LinearOperator"),
    "mu curvature shape": (lambda: GEO.mu(aslinearoperator(np.eye(4))), ValueError,
                           r"curvature must have shape \(3, 3\), got \(4, 4\)"),
    "mu frobenius2": (lambda: GEO.mu(aslinearoperator(M), frobenius2=0.0), ValueError,
                      r"frobenius2 must be > 0"),
    # estimates for large n
    "estimate_mu m > n": (lambda: ng.estimate_mu(LIN, TH, X, Y, m=7), ValueError, r"m must be <= 6, got 7"),
    "estimate_mu chunk": (lambda: ng.estimate_mu(LIN, TH, X, Y, m=4, chunk_size=0), ValueError,
                          r"chunk_size must be >= 1"),
    "estimate_g v rows": (lambda: ng.estimate_g(LIN, TH, X, Y, torch.ones(4, dtype=DT), m=4), ValueError,
                          r"v must have p = 3 rows"),
    "estimate_g level": (lambda: ng.estimate_g(LIN, TH, X, Y, TH, m=4, level=0), ValueError,
                         r"level must lie in \(0, 1\), got 0\.0"),
    "estimate_mu_from_sample n < m": (lambda: ng.estimate_mu_from_sample(X, X, 5, exact_loss=1.0), ValueError,
                                      r"n must be >= 6, got 5"),
    "estimate_mu_from_sample interval": (lambda: ng.estimate_mu_from_sample(X, X, 6, normalization="fisher",
                                                                            interval="t"),
                                         ValueError, r"interval must be 'normal' or 'log', got 't'"),
    "estimate_g_from_sample factor": (lambda: ng.estimate_g_from_sample(X, X[:, :2], TH, 6, exact_loss=1.0),
                                      ValueError, r"factor must have p = 3 columns like grads"),
    # stability
    "gd_stable eta": (lambda: ng.gd_stable(1.0, 0.0), ValueError, r"eta must be finite and > 0"),
    "threshold eta": (lambda: ng.frobenius_threshold(-1.0, 2), ValueError, r"eta must be finite and > 0"),
    "threshold B": (lambda: ng.frobenius_threshold(0.1, 0), ValueError, r"batch_size must be >= 1"),
    "threshold mu": (lambda: ng.frobenius_threshold(0.1, 2, 0.0), ValueError, r"mu must be finite and > 0"),
    "aligned lams": (lambda: ng.aligned_second_moment_map([1.0, -0.5], 0.1, 1), ValueError,
                     r"lams must be non-negative"),
    "aligned lams nan": (lambda: ng.aligned_second_moment_map([1.0, np.nan], 0.1, 1), ValueError,
                         r"lams contains non-finite"),
    "aligned eta": (lambda: ng.aligned_second_moment_map([1.0], float("inf"), 1), ValueError,
                    r"eta must be finite"),
    "perron square": (lambda: ng.perron(np.ones((2, 3))), ValueError, r"M must be square"),
    "perron negative": (lambda: ng.perron(-M), ValueError, r"M must be entrywise non-negative"),
    "perron formula rho": (lambda: ng.perron_vector_formula([2.0, 1.0], 0.1, 1, 0.5), ValueError,
                           r"rho must exceed"),
    "ls map eta": (lambda: ng.least_squares_second_moment_map(X, 0.0), ValueError, r"eta must be finite and > 0"),
    "ls map B": (lambda: ng.least_squares_second_moment_map(X, 0.1, 7), ValueError, r"batch_size must be <= 6"),
    "ls map W": (lambda: ng.least_squares_second_moment_map(X, 0.1, 2)(torch.eye(2, dtype=DT)), ValueError,
                 r"W must have trailing shape \(3, 3\)"),
    "radius big d": (lambda: ng.second_moment_spectral_radius(torch.ones(2, 61, dtype=DT), 0.1), ValueError,
                     r"d = 61 > 60 is too large"),
    "nonuniformity X": (lambda: ng.nonuniformity(torch.ones(3, dtype=DT)), ValueError, r"X must be 2-D"),
}

SIM = dict(eta=0.1, steps=3)
CASES.update({
    "sim steps": (lambda: ng.simulate(LIN, X, Y, TH, eta=0.1, steps=0), ValueError, r"steps must be >= 1"),
    "sim seeds": (lambda: ng.simulate(LIN, X, Y, TH, n_seeds=0, **SIM), ValueError, r"n_seeds must be >= 1"),
    "sim B": (lambda: ng.simulate(LIN, X, Y, TH, batch_size=7, **SIM), ValueError, r"batch_size must be <= 6"),
    "sim record_every": (lambda: ng.simulate(LIN, X, Y, TH, record_every=0, **SIM), ValueError,
                         r"record_every must be >= 1"),
    "sim eta negative": (lambda: ng.simulate(LIN, X, Y, TH, eta=-0.1, steps=3), ValueError,
                         r"eta must be finite and > 0"),
    "sim eta length": (lambda: ng.simulate(LIN, X, Y, TH, eta=np.ones(2), steps=3), ValueError,
                       r"eta must be a number, a callable or an array of length steps = 3"),
    "sim eta callable nan": (lambda: ng.simulate(LIN, X, Y, TH, eta=lambda t: float("nan"), steps=3), ValueError,
                             r"eta must be finite and > 0 at every step"),
    "sim noise": (lambda: ng.simulate(LIN, X, Y, TH, noise="pink", batch_size=2, **SIM), ValueError,
                  r"noise must be None or one of"),
    "sim noise no B": (lambda: ng.simulate(LIN, X, Y, TH, noise="isotropic", **SIM), ValueError,
                       r"noise needs batch_size"),
    "sim noise ce": (lambda: ng.simulate(MLP, X, torch.zeros(6, dtype=torch.long), MLP.theta0, noise="isotropic",
                                         batch_size=2, loss="cross_entropy", **SIM), ValueError,
                     r"square loss only"),
    "sim on_divergence": (lambda: ng.simulate(LIN, X, Y, TH, on_divergence="stop", **SIM), ValueError,
                          r"on_divergence must be 'warn', 'raise' or 'ignore'"),
    "sim theta0 p": (lambda: ng.simulate(LIN, X, Y, torch.zeros(4, dtype=DT), **SIM), ValueError,
                     r"theta0 must have p = 3 entries per row"),
    "sim theta0 seeds": (lambda: ng.simulate(LIN, X, Y, torch.zeros(2, 3, dtype=DT), n_seeds=3, **SIM),
                         ValueError, r"theta0 of shape \(n_seeds, p\) must have n_seeds = 3 rows, got 2"),
    "sim theta0 nan": (lambda: ng.simulate(LIN, X, Y, NAN3, **SIM), ValueError, r"theta0 contains non-finite"),
    "sim theta_ref": (lambda: ng.simulate(LIN, X, Y, TH, theta_ref=torch.zeros(2, dtype=DT), **SIM), ValueError,
                      r"theta_ref must have length p = 3"),
    "sim directions no ref": (lambda: ng.simulate(LIN, X, Y, TH, directions=torch.eye(3, dtype=DT), **SIM),
                              ValueError, r"directions needs theta_ref"),
    "sim directions rows": (lambda: ng.simulate(LIN, X, Y, TH, theta_ref=TH, directions=torch.eye(2, dtype=DT),
                                                **SIM), ValueError, r"directions must have p = 3 rows"),
    "sim escape_loss": (lambda: ng.simulate(LIN, X, Y, TH, escape_loss=-1.0, **SIM), ValueError,
                        r"escape_loss must be finite and > 0"),
    "sim X nan": (lambda: ng.simulate(LIN, _xnan(), Y, TH, **SIM), ValueError, r"X contains non-finite"),
    "sim y rows": (lambda: ng.simulate(LIN, X, Y[:3], TH, **SIM), ValueError, r"y must have one entry per sample"),
    "energy_fraction": (lambda: ng.simulate(LIN, X, Y, TH, **SIM).energy_fraction(), ValueError,
                        r"energy_fraction needs a run with theta_ref and directions"),
})


# ---- the estimators of noisegeom/estimators.py, on their own small problems
_g = torch.Generator().manual_seed(0)
E_GR, E_FA = torch.randn(6, 5, generator=_g, dtype=DT), torch.randn(12, 5, generator=_g, dtype=DT)
E_LO = torch.rand(6, generator=_g, dtype=DT) + 0.1
E_LIN = ng.linear_model(3)
E_X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
E_Y = E_X[:, 0] + 0.1


ESTIMATOR_CASES = {
    "m small": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=3), ValueError, r"m must be >= 4"),
    "m large": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=9), ValueError, r"m must be <= 8"),
    "m float": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=4.0), TypeError, r"m must be an integer"),
    "g m small": (lambda: ng.estimate_g(E_LIN, E_LIN.theta0, E_X, E_Y, torch.ones(3), m=2), ValueError, r"m must be >= 3"),
    "n tiny": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X[:3], E_Y[:3], m=3), ValueError, r"X must hold n >= 4"),
    "level 1": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=4, level=1.0), ValueError, r"level must lie in"),
    "level bool": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6, losses=E_LO, level=True), TypeError, r"level must"),
    "normalization": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=4, normalization="x"), ValueError,
                      r"normalization must be 'loss' or 'fisher'"),
    "interval": (lambda: ng.estimate_g_from_sample(E_GR, E_FA, torch.ones(5), 6, losses=E_LO, interval="t"), ValueError,
                 r"interval must be 'normal' or 'log'"),
    "side": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6, losses=E_LO, side="p"), ValueError, r"side must be"),
    "seed": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=4, seed=-1), ValueError, r"seed must be >= 0"),
    "model": (lambda: ng.estimate_mu(object(), E_LIN.theta0, E_X, E_Y, m=4), TypeError, r"model must be"),
    "exact_loss": (lambda: ng.estimate_mu(E_LIN, E_LIN.theta0, E_X, E_Y, m=4, exact_loss=-1.0), ValueError,
                   r"exact_loss must be finite and > 0"),
    "n < m": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 5, losses=E_LO), ValueError, r"n must be >= 6"),
    "grads rows": (lambda: ng.estimate_mu_from_sample(E_GR[:3], E_FA[:6], 6, losses=E_LO[:3]), ValueError,
                   r"grads must hold m >= 4"),
    "grads 1-D": (lambda: ng.estimate_mu_from_sample(E_GR[0], E_FA, 6, losses=E_LO), ValueError, r"grads must be 2-D"),
    "factor rows": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA[:7], 6, losses=E_LO), ValueError,
                    r"factor must have k·m rows"),
    "factor cols": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA[:, :4], 6, losses=E_LO), ValueError,
                    r"factor must have p = 5 columns"),
    "factor nan": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA * math.nan, 6, losses=E_LO), ValueError,
                   r"factor contains non-finite"),
    "losses length": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6, losses=E_LO[:5]), ValueError,
                      r"losses must have one entry per row of grads"),
    "losses negative": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6, losses=-E_LO), ValueError,
                        r"losses must be >= 0"),
    "losses zero": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6, losses=0 * E_LO), ValueError, r"loss is zero"),
    "no losses": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6), ValueError, r"give losses .* or exact_loss"),
    "both losses": (lambda: ng.estimate_mu_from_sample(E_GR, E_FA, 6, losses=E_LO, exact_loss=1.0), ValueError,
                    r"give losses .* or exact_loss .* not both"),
    "zero factor": (lambda: ng.estimate_mu_from_sample(E_GR, 0 * E_FA, 6, losses=E_LO), ValueError,
                    r"factor: every A_iA_jᵀ of the subsample vanishes"),
    "v rows": (lambda: ng.estimate_g_from_sample(E_GR, E_FA, torch.ones(4), 6, losses=E_LO), ValueError,
               r"v must have p = 5 rows"),
    "v zero": (lambda: ng.estimate_g(E_LIN, E_LIN.theta0, E_X, E_Y, torch.zeros(3), m=4), ValueError,
               r"v column 0 is the zero vector"),
    "v flat": (lambda: ng.estimate_g_from_sample(E_GR, 0 * E_FA, torch.ones(5), 6, losses=E_LO), ValueError,
               r"v column 0 has A_i v = 0"),
}
CASES.update({f"estimators: {k}": v for k, v in ESTIMATOR_CASES.items()})


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_clear_error(name):
    fn, exc, match = CASES[name]
    with pytest.raises(exc, match=match):
        fn()


def test_flat_direction_of_G_is_rejected():
    """vᵀGv = 0: G = XᵀX/n has a null space when p > n; g(v) is 0/0 along it."""
    Xw = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=DT)
    geo = ng.NoiseGeometry.square_loss(Xw, torch.tensor([1.0, -2.0, 0.5], dtype=DT))
    _, _, Vt = torch.linalg.svd(Xw)
    null = Vt[-1]                                             # X null = 0
    with pytest.raises(ValueError, match=r"v column 0 has vᵀCv = .* for C = G: g is undefined along a direction of zero or negative curvature"):
        geo.g(null)
    both = torch.stack([Vt[0], null], 1)
    with pytest.raises(ValueError, match=r"v column 1 has vᵀCv"):
        geo.g(both)
    Q = torch.linalg.qr(torch.stack([null, Vt[-2]], 1))[0]
    with pytest.raises(ValueError, match=r"V column 0 has vᵀCv"):
        geo.g_subspace(Q)


def test_zero_jacobian_is_rejected():
    geo = ng.NoiseGeometry(torch.zeros(4, 3, dtype=DT), torch.zeros(4, 3, dtype=DT), 1.0)
    with pytest.raises(ValueError, match=r"G = 0"):
        geo.mu()
    with pytest.raises(ValueError, match=r"G = 0 \(the factor, J for the square loss, is zero\): the isotropic baseline is undefined"):
        geo.mu_isotropic()
    with pytest.raises(ValueError, match=r"Tr G · Tr Σ₁ = 0: the indicator is 0/0"):
        geo.zhu_indicator()


def test_mu_with_large_operator_needs_frobenius2():
    p = 5000
    grads = torch.randn(3, p, generator=torch.Generator().manual_seed(2), dtype=DT)
    geo = ng.NoiseGeometry(grads, grads, 1.0)
    with pytest.raises(ValueError, match=r"frobenius2 is required for p = 5000 > 4096"):
        geo.mu(aslinearoperator(scipy.sparse.eye(p)))
    assert geo.mu(aslinearoperator(scipy.sparse.eye(p)), frobenius2=float(p)) > 0


def test_huge_finite_values_are_not_mistaken_for_non_finite():
    """The finiteness check sums first (one pass); an overflowing sum falls back to an entrywise check."""
    big = [1.5e308, 1.5e308]                                   # finite, but the sum overflows
    X = ng.gaussian_inputs(4, big, seed=0)                     # x ~ N(0, diag(big)): entries ~ 1e154
    assert torch.isfinite(X).all() and X.abs().max() > 1e150
    with pytest.raises(ValueError, match=r"spectrum contains non-finite"):
        ng.gaussian_inputs(4, [1.5e308, 1.5e308, np.inf])


# ------------------------------------------------------------------ cases that used to pass silently

def test_scalar_targets_as_a_column_are_the_targets_not_a_broadcast():
    # (n, 1) targets against (n,) outputs once broadcast to an n×n residual; now they are the targets
    model = ng.two_layer_net(3, 4, seed=0)
    Xs = ng.gaussian_inputs(12, np.ones(3), seed=1)
    ys = model(model.theta0 * 1.1, Xs)
    assert torch.equal(ng.residuals(model, model.theta0, Xs, ys[:, None]), ng.residuals(model, model.theta0, Xs, ys))
    a = ng.simulate(model, Xs, ys[:, None], model.theta0, eta=0.2, steps=20, batch_size=4, seed=2)
    b = ng.simulate(model, Xs, ys, model.theta0, eta=0.2, steps=20, batch_size=4, seed=2)
    assert np.array_equal(a.loss, b.loss)
    assert a.loss[0, 0] == pytest.approx(ng.loss_value(model, model.theta0, Xs, ys), rel=1e-12)


def test_overflow_loss_sign_chunk_size_n_one_and_labels_get_clear_errors():
    model = ng.linear_model(3)
    Xs = ng.gaussian_inputs(10, np.ones(3), seed=0)
    ys = torch.ones(10, dtype=torch.float64)
    theta = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="‖G‖_F² is not finite.*rescale them"):
        ng.NoiseGeometry.from_model(model, theta, 1e150 * Xs, ys).mu()
    with pytest.raises(ValueError, match=r"loss must be >= 0.*got -1\.0"):
        ng.NoiseGeometry(torch.ones(3, 2), torch.ones(3, 2), -1.0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        ng.NoiseGeometry.from_model(model, theta, Xs, ys, chunk_size=0)
    with pytest.raises(ValueError, match="need n >= 2 samples"):
        ng.NoiseGeometry.from_model(model, theta, Xs[:1], ys[:1] + 5)
    clf = ng.mlp([3, 4], seed=0)
    for labels, match in ((torch.full((10,), -100), "-100"), (torch.full((10,), -1), r"got -1"),
                          (torch.full((10,), 4), r"labels 0, \.\.\., 3 .*got 4")):
        with pytest.raises(ValueError, match=match):
            ng.per_sample_gradients(clf, clf.theta0, Xs, labels, loss="cross_entropy")
    with pytest.raises(ValueError, match="does not fit the model"):
        ng.per_sample_gradients(clf, clf.theta0, torch.ones(10, 5, dtype=torch.float64), torch.zeros(10, dtype=torch.long),
                                loss="cross_entropy")
