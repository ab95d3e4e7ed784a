"""A thin ``ipywidgets`` shell over plotting functions.

:func:`explore` shows the figure at the default settings as an ordinary
output — a static PNG image that needs no JavaScript, visible in the built
website — and puts the controls under it. In a live kernel (Jupyter,
Binder) moving a control redraws *the same* output in place through a
display handle, so the page never holds two copies of the figure.

The plotting function must be cheap and return a matplotlib Figure; the heavy
lifting belongs in a tested package function. The aim is an update (the function
and its PNG) under 150 ms; ``scripts/widget_times.py`` measures every chapter's.
"""

from __future__ import annotations

import inspect
import io
import time

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["explore", "build_controls"]


def _defaults(fn) -> dict:
    sig = inspect.signature(fn)
    return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


def build_controls(plot_fn, **controls):
    """Make the widgets for ``controls`` (interact abbreviations or widgets) and an update callback.

    Returns
    -------
    (widgets, values, render)
        ``widgets`` maps names to ipywidgets controls, ``values()`` returns the
        current keyword arguments and ``render()`` calls ``plot_fn`` with them,
        returning (figure, seconds).
    """
    from ipywidgets import interactive

    if not callable(plot_fn):
        raise TypeError(f"plot_fn must be callable, got {type(plot_fn).__name__}")
    defaults = _defaults(plot_fn)
    params = inspect.signature(plot_fn).parameters
    made = {}
    for name, abbrev in controls.items():
        if name not in params:
            raise ValueError(f"control {name!r} is not a parameter of {plot_fn.__name__}")
        w = interactive.widget_from_abbrev(abbrev, defaults.get(name, inspect.Parameter.empty))
        if w is None:
            raise ValueError(f"cannot build a widget for control {name!r} from {abbrev!r}")
        w.description = name
        if hasattr(w, "continuous_update"):
            w.continuous_update = False
        made[name] = w

    def values():
        return {k: w.value for k, w in made.items()}

    def render():
        t0 = time.perf_counter()
        fig = plot_fn(**values())
        return fig, time.perf_counter() - t0

    return made, values, render


def _to_image(fig):
    """The figure as a PNG image for display, drawn once.

    ``savefig`` draws a figure with a layout engine (the book style turns on constrained layout)
    twice, once to lay it out and once to paint it, each time measuring every text afresh, and
    Jupyter's inline backend adds ``bbox_inches='tight'`` on top. A draw on the figure's own Agg
    canvas lays out and paints in one pass with one renderer, and its pixels are encoded as they
    are: less than half the time of the inline backend, and as the layout engine already fits
    the figure to its canvas, the same picture. Figures without a layout engine keep the
    tight box of ``savefig``.
    """
    from IPython.display import Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image as PILImage

    buf = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.savefig(buf, format="png", bbox_inches="tight")
    else:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        PILImage.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png")
    return Image(data=buf.getvalue(), format="png")


def explore(plot_fn, **controls) -> None:
    """Static figure at the defaults, then live controls that redraw it in place.

    Parameters
    ----------
    plot_fn : callable returning a matplotlib Figure
        Its keyword defaults are the static figure's settings.
    **controls
        ``ipywidgets.interact`` abbreviations, e.g. ``eta=(0.01, 1.0, 0.01)``,
        ``batch_size=[1, 2, 5, 10]``, or ready-made widgets.

    Examples
    --------
    >>> explore(plot_sgd_vs_gd, eta=(0.05, 0.9, 0.05), batch_size=[1, 2, 5, 20])  # doctest: +SKIP
    """
    from IPython.display import display
    from ipywidgets import VBox

    made, values, render = build_controls(plot_fn, **controls)
    fig, _ = render()
    handle = display(_to_image(fig), display_id=True)
    plt.close(fig)

    def on_change(_change):
        new, _ = render()
        if handle is not None:  # outside a kernel display() prints and returns no handle
            handle.update(_to_image(new))
        plt.close(new)

    for w in made.values():
        w.observe(on_change, names="value")
    display(VBox(list(made.values())))
