"""Small plotting helpers shared by the chapters: one style, bands over seeds, loss contours."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np

__all__ = ["use_book_style", "band", "contour_loss", "COLORS"]

#: Colours used consistently across the book: GD, SGD, theory, isotropic baseline.
COLORS = {"gd": "#1f4e9c", "sgd": "#d1495b", "theory": "#2a2a2a", "isotropic": "#8c8c8c",
          "accent": "#edae49", "flat": "#00798c"}


def use_book_style() -> None:
    """Readable fonts and light grids for every figure of the book."""
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.0), "figure.dpi": 100, "savefig.dpi": 100,
        "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "figure.constrained_layout.use": True,
    })


def band(ax, x, samples, *, q=(10, 90), label=None, color=None, axis: int = 1, **kwargs):
    """Median line and a shaded q-quantile band of ``samples`` over seeds.

    Parameters
    ----------
    ax : matplotlib Axes
    x : array (R,)
    samples : array (R, S) — seeds along ``axis``
    q : (low, high) percentiles, default (10, 90)
    """
    samples = np.asarray(samples, dtype=float)
    lo, med, hi = np.nanpercentile(samples, [q[0], 50, q[1]], axis=axis)
    (line,) = ax.plot(x, med, label=label, color=color, **kwargs)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def contour_loss(ax, loss_fn, xlim, ylim, *, levels: int = 15, resolution: int = 120, log: bool = True):
    """Contours of a 2-D loss ``loss_fn(T)`` evaluated on a grid T of shape (m, 2)."""
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    XX, YY = np.meshgrid(xs, ys)
    Z = np.asarray(loss_fn(np.stack([XX.ravel(), YY.ravel()], 1)), dtype=float).reshape(XX.shape)
    if log:
        Z = np.log10(Z + 1e-12 * max(Z.max(), 1e-300))
    return ax.contour(XX, YY, Z, levels=levels, cmap="Greys", linewidths=0.8, alpha=0.8)
