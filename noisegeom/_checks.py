"""Input validation shared by the public functions.

Every public function checks its arguments here, so that a wrong shape or a
non-finite value is reported with the argument's name and what was expected,
instead of surfacing as a ``nan`` or a traceback from deep inside torch.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

DTYPE = torch.float64


def as_tensor(x, name: str, *, ndim=None, dtype=DTYPE, finite: bool = True, device=None) -> torch.Tensor:
    """Convert ``x`` to a float64 tensor and check its rank and finiteness.

    A tensor keeps its device unless ``device`` is given; an array or list lands on ``device``
    (the CPU by default). The finiteness check runs where the tensor ends up.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype != dtype and (dtype is not None):
            t = t.to(dtype)
        if device is not None:
            t = t.to(device)
    else:
        try:
            a = np.asarray(x)
            # torch cannot wrap negative strides (e.g. eigh's w[::-1]): copy those
            t = torch.as_tensor(a.copy() if any(st < 0 for st in a.strides) else a, dtype=dtype, device=device)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            want = " or ".join(f"{k}-D" for k in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if finite and t.is_floating_point() and not _all_finite(t):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return t


def _all_finite(t: torch.Tensor) -> bool:
    # a finite sum proves every entry finite (nan and ±inf propagate) in one cheap pass;
    # only when the sum is not finite (a bad entry, or overflow) look entry by entry
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def device_of(x) -> torch.device:
    """The device a computation on ``x`` runs on: a tensor's own, the CPU for anything else."""
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def on_accelerator(device: torch.device) -> bool:
    """True off the CPU: there the package's torch-only paths replace its CPU fast paths
    (scipy BLAS, numpy), and host transfers are explicit."""
    return device.type != "cpu"


def follow_device(x, device: torch.device):
    """``x`` (θ, y, directions: a tensor, array or list) moved to ``device`` when that is an
    accelerator, so that data on the GPU needs no other argument moved by hand. On the CPU, and
    for input that is not numeric (reported by the caller's own checks), ``x`` is returned as is."""
    if x is None or not on_accelerator(device):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().to(device)
    try:
        a = np.asarray(x)
        return torch.as_tensor(a.copy() if any(st < 0 for st in a.strides) else a, device=device)
    except (TypeError, ValueError):
        return x


def seeded_generator(seed: int, device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``: random numbers are drawn where
    they are used (a CPU generator cannot draw CUDA tensors). On the CPU it is the plain
    ``torch.Generator().manual_seed(seed)``; a CUDA generator gives other numbers than the CPU's."""
    return torch.Generator(device=device).manual_seed(int(seed))


def check_int(x, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check that ``x`` is an integer in ``[low, high]``."""
    if isinstance(x, bool) or not isinstance(x, Integral):
        raise TypeError(f"{name} must be an integer, got {x!r}")
    x = int(x)
    if low is not None and x < low:
        raise ValueError(f"{name} must be >= {low}, got {x}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {x}")
    return x


def check_bool(x, name: str) -> bool:
    """A flag: True or False (not a tensor, a number or a string)."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {x!r}")
    return bool(x)


def check_seed(seed) -> int:
    """A seed: an integer ≥ 0 (not a float, a bool or None)."""
    return check_int(seed, "seed", low=0)


def check_finite_result(value, what: str, inputs: str):
    """A result that overflowed float64 is an error that names the inputs, never a silent inf or nan."""
    ok = _all_finite(value) if isinstance(value, torch.Tensor) else np.all(np.isfinite(np.asarray(value, float)))
    if not ok:
        raise ValueError(f"{what} is not finite: {inputs} too large for float64 (their products overflow); "
                         f"rescale them")
    return value


def check_positive(x, name: str, *, allow_zero: bool = False) -> float:
    """Check that ``x`` is a finite positive real number."""
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{name} must be a real number, got {x!r}")
    x = float(x)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {x}")
    return x


def check_batch_size(batch_size, n: int) -> int:
    """A batch size must lie in 1..n (the number of samples)."""
    return check_int(batch_size, "batch_size", low=1, high=n)


def check_rows(a: torch.Tensor, name: str, n: int, what: str = "samples") -> None:
    if a.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per {what[:-1]}), got shape {tuple(a.shape)}")


def check_loss_positive(loss: float) -> None:
    """The alignment metrics divide by 2L; at L = 0 they are 0/0."""
    if not math.isfinite(loss):
        raise ValueError(f"loss is not finite ({loss}): the residuals e = f(X) - y overflow float64 (X, y or e "
                         f"too large), or the run has diverged")
    if loss < 0.0:
        raise ValueError(f"loss must be >= 0 (a mean of per-sample losses), got {loss}")
    if loss == 0.0:
        raise ValueError(
            "loss is zero: the alignment metrics are 0/0 at an interpolating point "
            "(every residual vanishes, so the noise covariance and 2L are both 0). "
            "Evaluate them at a point with nonzero loss, e.g. a small perturbation."
        )
