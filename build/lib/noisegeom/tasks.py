"""Ready-made learning problems that several chapters measure on.

* :func:`~noisegeom.two_layer_task`: a student two-layer network fitting a smaller two-layer
  teacher on Gaussian inputs with a power-law covariance (chapters 2, 3, 5 and 6),
  returned as a :class:`~noisegeom.Task`, ``(model, X, y, theta0)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._checks import check_int
from .data import gaussian_inputs, power_law_spectrum
from .models import FlatModel, two_layer_net

__all__ = ["Task", "two_layer_task"]


class Task(NamedTuple):
    """A regression problem: unpack as ``model, X, y, theta0 = task``."""

    model: FlatModel
    X: torch.Tensor
    y: torch.Tensor
    theta0: torch.Tensor


def two_layer_task(*, d: int = 10, width: int = 30, n: int = 100, alpha: float = 1.0,
                   activation: str = "tanh", teacher_width: int = 4, seed: int = 0) -> Task:
    """A student two-layer network fitting a smaller two-layer teacher (chapters 2, 3, 5 and 6).

    Inputs x_i ~ N(0, S) with S = diag(k^{-α}) normalised to Tr S = d
    (:func:`noisegeom.power_law_spectrum`), so that G is ill-conditioned for
    α > 0. Labels y_i = f_teacher(x_i), with the teacher
    ``two_layer_net(d, teacher_width, seed=seed + 1)``. The student is
    ``two_layer_net(d, width, activation, seed=seed)`` (outer layer fixed), so
    p = d·width.

    Returns
    -------
    Task
        ``(model, X, y, theta0)``.
    """
    d = check_int(d, "d", low=1)
    width = check_int(width, "width", low=1)
    n = check_int(n, "n", low=2)
    teacher_width = check_int(teacher_width, "teacher_width", low=1)
    X = gaussian_inputs(n, power_law_spectrum(d, alpha), seed=seed)
    teacher = two_layer_net(d, teacher_width, activation="tanh", seed=seed + 1)
    y = teacher(teacher.theta0, X)
    model = two_layer_net(d, width, activation=activation, seed=seed)
    return Task(model, X, y, model.theta0.clone())
