"""noisegeom — the numerics of *Noise Geometry*.

How the noise of SGD aligns with the curvature of the loss, computed exactly
and cheaply: per-sample gradients and Jacobians (``torch.func``), the exact
minibatch noise covariance, Gauss–Newton/Hessian products, Lanczos
eigenpairs, the alignment metrics μ and g through n×n Gram matrices,
stability maps, and GD/SGD simulators vectorised over seeds.

Notation follows the book (and ``shared/science.md``): residual
e_i = f(x_i; θ) − y_i, loss L = (1/2n) Σ e_i², J ∈ R^{n×p}, G = JᵀJ/n,
Σ₁ = (1/n) Σ g_i g_iᵀ − ∇L∇Lᵀ, Σ_B = c(n, B) Σ₁. Everything is float64.

This module's exports are the toolbox, the stable API a researcher reuses. The
numerics of single chapters live one floor up, in ``noisegeom.chapters``
(``noisegeom.chapters.ch07_stability_and_escape`` for chapter 7, and so on); they
are imported from there and never from here.
"""

from .alignment import (NoiseGeometry, average_alignment, directional_alignment,
                        isotropic_alignment, subspace_alignment)
from .autodiff import (LOSSES, ggn_factor, jacobian, loss_value, per_sample_gradients,
                       per_sample_losses, residuals)
from .curvature import (Eigenpairs, gauss_newton_matrix, gauss_newton_operator, gauss_newton_spectra,
                        hessian_matrix, hessian_operator, hessian_spectra, hutchinson, sharpness_summary,
                        top_eigenpairs)
from .estimators import (Estimate, estimate_g, estimate_g_from_sample, estimate_mu,
                         estimate_mu_from_sample)
from .factored import FactoredJacobian, NotFactorableError, factored_jacobian
from .data import (effective_dimension, gaussian_inputs, load_cifar10, load_digits, load_mnist, power_law_spectrum,
                   teacher_labels)
from .layerwise import NotLayerwiseError
from .models import (ACTIVATIONS, FlatModel, deep_linear_model, diagonal_linear_model, linear_model, mlp,
                     small_cnn, two_layer_net)
from .noise import (batch_noise_factor, minibatch_gradients, noise_covariance, noise_covariance_operator,
                    sample_batches)
from .simulate import NOISE_SHAPES, DivergenceError, Trajectory, find_minimum, measure_along_run, simulate
from .stability import (aligned_second_moment_map, frobenius_threshold, gd_stable,
                        least_squares_second_moment_map, nonuniformity, perron, perron_vector_formula,
                        second_moment_spectral_radius)
from .tasks import Task, two_layer_task

# The figures and widgets of the book need matplotlib, ipywidgets and IPython, which the
# package alone does not install (`pip install "noisegeom[book]"` adds them): they are
# imported on first use, ng.plotting and ng.widgets, so that `import noisegeom` works without.
_BOOK_MODULES = ("plotting", "widgets")


def __getattr__(name):
    if name in _BOOK_MODULES:
        import importlib

        try:
            module = importlib.import_module(f".{name}", __name__)
        except ImportError as exc:
            raise ImportError(f"noisegeom.{name} needs the book's extras ({exc.name or exc} is missing): "
                              f'pip install "noisegeom[book]"') from exc
        globals()[name] = module
        return module
    raise AttributeError(f"module 'noisegeom' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    # models and data
    "FlatModel", "linear_model", "deep_linear_model", "diagonal_linear_model", "two_layer_net", "mlp",
    "small_cnn", "ACTIVATIONS", "power_law_spectrum", "effective_dimension", "gaussian_inputs",
    "teacher_labels", "load_digits", "load_mnist", "load_cifar10", "Task", "two_layer_task",
    # autodiff
    "LOSSES", "residuals", "loss_value", "per_sample_losses", "jacobian", "per_sample_gradients", "ggn_factor",
    "FactoredJacobian", "factored_jacobian", "NotFactorableError", "NotLayerwiseError",
    # noise
    "batch_noise_factor", "noise_covariance", "noise_covariance_operator", "sample_batches",
    "minibatch_gradients",
    # curvature
    "gauss_newton_operator", "gauss_newton_matrix", "hessian_operator", "hessian_matrix", "Eigenpairs",
    "top_eigenpairs", "hutchinson", "hessian_spectra", "gauss_newton_spectra", "sharpness_summary",
    # alignment
    "NoiseGeometry", "average_alignment", "directional_alignment", "subspace_alignment",
    "isotropic_alignment",
    # estimates for large n
    "Estimate", "estimate_mu", "estimate_g", "estimate_mu_from_sample", "estimate_g_from_sample",
    # stability
    "gd_stable", "frobenius_threshold", "aligned_second_moment_map", "perron", "perron_vector_formula",
    "least_squares_second_moment_map", "second_moment_spectral_radius", "nonuniformity",
    # simulation
    "simulate", "Trajectory", "DivergenceError", "NOISE_SHAPES", "measure_along_run", "find_minimum",
    # figures and interactive figures
    "plotting", "widgets",
]
