"""Interactive figures: live ``ipywidgets`` controls in Jupyter, precomputed frames on the website.

:func:`explore` is the one call a chapter makes. It has two faces:

* **In a live kernel** (Jupyter, Binder) it shows the figure at the default settings as an
  ordinary PNG output and puts ``ipywidgets`` controls under it; moving a control redraws
  *the same* output in place through a display handle, over the controls' full ranges
  (:class:`LiveFigure` keeps those redraws as cheap as the figure allows).
* **In the book build** (the environment variable ``NOISEGEOM_WIDGET_FRAMES`` names a folder;
  ``scripts/build_book.sh`` sets it) a static website has no kernel to redraw anything. So
  the figure is rendered over a grid of the controls' values (:class:`WebGrid`), each frame
  written to that folder as a compressed image named by its content hash, and the output is
  an HTML block: the default frame, inline so that it shows without JavaScript, plain HTML
  controls whose steps are exactly the grid's values, and a note saying so. The site's script
  (``_ext/static/explorer/explorer.js``) swaps in the frame for the setting the controls show
  and loads a widget's frames only once the reader reaches for its controls;
  ``_ext/widget_frames.py`` copies the frames the pages use into ``_static/frames``.
  The output also carries the default frame as ``image/png``, which is what a notebook
  viewer or the PDF shows.

The figure is either a plotting function that returns a new matplotlib Figure for each
setting, or a :class:`LivePlot`: a figure made once and updated in place, which is what keeps
a live update fast (a fresh figure spends most of its first drawing creating tick objects and
laying out text; an updated one reuses them). The heavy lifting belongs in a tested package
function. The aim is a live update under 150 ms from the reader's key press to the new
figure on screen: ``scripts/widget_times.py`` measures every chapter's update in the kernel,
``scripts/widget_times_live.py`` the whole update in JupyterLab.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import html
import inspect
import io
import itertools
import json
import os
import time
from decimal import Decimal
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["explore", "build_controls", "LivePlot", "LiveFigure", "WebGrid", "FRAMES_ENV"]

#: Environment variable naming the folder for the website's frames; set by the book build.
FRAMES_ENV = "NOISEGEOM_WIDGET_FRAMES"
#: Most frames one widget may render for the website (build time and site size).
MAX_FRAMES = 400
#: Values a slider gets on the website unless the chapter says otherwise.
SLIDER_VALUES = 5


class LivePlot:
    """A figure made once and updated in place at each setting of its controls.

    ``make()`` draws what does not depend on the controls (axes, labels, fixed curves) and
    the artists that do, and returns ``(fig, update)``; ``update(**controls)`` sets those
    artists' data, texts and limits for one setting, and its keyword defaults are the
    figure's default setting. A live widget keeps the one figure and calls ``update`` on
    each move, so a redraw reuses the figure's ticks, text layout and axes positions.

    Artists that ``update`` changes may be made with ``animated=True`` (matplotlib's mark for
    blitting; for an axes title, ``ax.title.set_animated(True)``). When an update changes
    only animated artists, the figure is not marked stale, and a live update restores the
    rest of the figure from the pixels of the last full drawing and draws just those artists
    on top (a few milliseconds instead of a full drawing); any other change (limits, a
    static text, a new artist) marks the figure stale and it is drawn in full. Animated
    artists are drawn after the others, so whatever must stay on top of them (markers, a
    legend over curves) is best animated too.

    Calling a LivePlot, ``plot(**controls)``, makes a fresh figure at that setting
    (``make()`` then ``update``, every artist drawn as usual): that is the static figure,
    and what tests compare with.

    Parameters
    ----------
    make : callable () -> (matplotlib.figure.Figure, callable)

    Examples
    --------
    >>> def line():
    ...     fig, ax = plt.subplots()
    ...     (curve,) = ax.plot([], [])
    ...     ax.set_xlim(0, 1)
    ...     def update(slope=1.0):
    ...         curve.set_data([0, 1], [0, slope])
    ...         ax.set_ylim(0, max(slope, 1e-3))
    ...     return fig, update
    >>> explore(LivePlot(line), slope=(0.0, 2.0, 0.1))  # doctest: +SKIP
    """

    def __init__(self, make):
        if not callable(make):
            raise TypeError(f"LivePlot(make): make must be callable, got {type(make).__name__}")
        self.make = make
        self.__name__ = getattr(make, "__name__", type(self).__name__)
        self.__doc__ = make.__doc__
        self._signature = None

    def start(self):
        """A new figure and its update function: ``make()``, checked."""
        from matplotlib.figure import Figure

        out = self.make()
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Figure)
                and callable(out[1])):
            raise TypeError(f"{self.__name__}() must return (figure, update), a matplotlib Figure "
                            f"and a function of the controls; got {type(out).__name__}")
        if self._signature is None:
            self._signature = inspect.signature(out[1])
        return out

    @property
    def signature(self) -> inspect.Signature:
        """The signature of ``update``: the controls and their defaults."""
        if self._signature is None:
            plt.close(self.start()[0])
        return self._signature

    def __call__(self, **controls):
        fig, update = self.start()
        update(**controls)
        for artist in fig.findobj(lambda a: a.get_animated()):
            artist.set_animated(False)        # a plain figure: Agg skips animated artists
        return fig


def _signature(fn) -> inspect.Signature:
    return fn.signature if isinstance(fn, LivePlot) else inspect.signature(fn)


def _defaults(fn) -> dict:
    sig = _signature(fn)
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
    params = _signature(plot_fn).parameters
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
    from PIL import Image as PILImage

    buf = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.savefig(buf, format="png", bbox_inches="tight")
    else:
        PILImage.fromarray(_rgba(fig)).save(buf, format="png")
    return Image(data=buf.getvalue(), format="png")


def _rgba(fig) -> np.ndarray:
    """The figure's pixels, drawn once on its Agg canvas (see :func:`_to_image`); a figure
    without a layout engine is cropped to its tight box, as ``savefig`` does."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image as PILImage

    if fig.get_layout_engine() is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGBA"))
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def _enlarge_mathtext_cache(size: int = 1024) -> None:
    """Let matplotlib keep more parsed mathtext strings (it keeps 50).

    One of the book's figures holds more than 50 distinct mathtext strings (log-axis tick
    labels at several font sizes, legend entries, titles), so with 50 every redraw parses
    them all again; parsing was about a fifth of redrawing chapter 3's figure.
    """
    from matplotlib.mathtext import MathTextParser

    cached = MathTextParser._parse_cached
    if getattr(cached, "cache_info", None) and cached.cache_info().maxsize < size:
        MathTextParser._parse_cached = functools.lru_cache(size)(cached.__wrapped__)


class LiveFigure:
    """A plotting function redrawn for a live control, as cheaply as the figure allows.

    Three things make a redraw of the same figure at another setting cheaper than a fresh
    drawing, and none changes the picture:

    * the layout is solved once. Constrained layout (the book style) measures every tick
      label and title to place the axes; a control changes curves and numbers, not the
      figure's structure, so the first drawing (at the defaults) solves it and every later
      one reuses its axes positions, when the figure has the same size and axes, and solves
      it afresh otherwise;
    * one Agg renderer draws every update, so matplotlib's text metrics, which it caches
      per renderer, are measured once for the tick labels that stay the same;
    * matplotlib's cache of parsed mathtext holds 1024 strings instead of 50.

    A :class:`LivePlot` goes further: its figure is made once and ``update`` changes it in
    place, so an update also keeps the ticks, texts and artists the setting does not change.

    Updates are PNGs with fast compression (level 1): they travel from the kernel to the
    browser on the same machine or Binder's, where a few kilobytes cost less than encoding.

    Parameters
    ----------
    plot_fn : callable returning a matplotlib Figure, or a LivePlot
    """

    def __init__(self, plot_fn):
        _enlarge_mathtext_cache()
        self.plot_fn = plot_fn
        self._live = None        # a LivePlot's (figure, update), made at the first drawing
        self._background = None  # its pixels without the animated artists, and those artists
        self.full_draws = 0      # drawings of a LivePlot in full (the others are blitted)
        self._key = None
        self._layout = None
        self._renderer = None
        self.reused = 0          # how many drawings reused the first one's layout

    @staticmethod
    def _structure(fig):
        return (tuple(np.round(fig.get_size_inches(), 6)), fig.dpi,
                tuple(type(ax).__name__ for ax in fig.axes))

    def _pixels(self, fig) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
        if self._renderer is not None:
            key, renderer = self._renderer
            if canvas.get_width_height(physical=True) + (fig.dpi,) == key:
                canvas.renderer, canvas._lastKey = renderer, key   # get_renderer reuses it
        canvas.draw()
        self._renderer = (canvas._lastKey, canvas.renderer)
        return np.asarray(canvas.buffer_rgba())

    def rgba(self, **kwargs) -> np.ndarray:
        """The figure ``plot_fn(**kwargs)`` as an RGBA array (height, width, 4)."""
        if isinstance(self.plot_fn, LivePlot):
            return self._rgba_in_place(kwargs)
        fig = self.plot_fn(**kwargs)
        try:
            if fig.get_layout_engine() is None:          # tight box, as the static figure
                return _rgba(fig)
            first = self._key is None
            if not first and self._structure(fig) == self._key:
                fig.set_layout_engine("none")
                for ax, pos in zip(fig.axes, self._layout["axes"]):
                    ax.set_position(pos)
                for name, xy in self._layout["sup"].items():
                    if getattr(fig, name, None) is not None:
                        getattr(fig, name).set_position(xy)
                self.reused += 1
            pixels = self._pixels(fig)
            if first:
                self._key = self._structure(fig)
                self._layout = {
                    "axes": [ax.get_position(original=False).frozen() for ax in fig.axes],
                    "sup": {name: getattr(fig, name).get_position()
                            for name in ("_suptitle", "_supxlabel", "_supylabel")
                            if getattr(fig, name, None) is not None},
                }
            return pixels.copy()        # the renderer's buffer is drawn over by the next update
        finally:
            plt.close(fig)

    def _rgba_in_place(self, kwargs) -> np.ndarray:
        first = self._live is None
        if first:
            fig, update = self.plot_fn.start()
            plt.close(fig)                   # drawn here only, never by the notebook's backend
            self._live = (fig, update)
        else:
            self.reused += 1
        fig, update = self._live
        update(**kwargs)
        if fig.get_layout_engine() is None:
            return _rgba(fig)                # tight box (savefig draws animated artists too)
        pixels = self._blit(fig)
        if first:
            fig.set_layout_engine("none")    # the first full drawing solved the layout: keep it
        return pixels.copy()

    def _blit(self, fig) -> np.ndarray:
        """Draw ``fig`` in full if it is stale (and keep its pixels without the animated
        artists), else restore those pixels; then draw the animated artists on top."""
        if fig.stale or self._background is None:
            self._pixels(fig)                        # Agg skips animated artists
            self._background = (fig.canvas.copy_from_bbox(fig.bbox), _animated_artists(fig))
            self.full_draws += 1
        else:
            fig.canvas.restore_region(self._background[0])
        renderer = fig.canvas.get_renderer()
        for artist in self._background[1]:
            artist.draw(renderer)
        # Drawing some artists marks them stale again (a legend re-lays out its box); the
        # figure on screen is what update() asked for, so only the next change counts.
        fig.stale = False
        return np.asarray(fig.canvas.buffer_rgba())

    def image(self, **kwargs):
        """``plot_fn(**kwargs)`` as an IPython PNG image (the first at the usual compression)."""
        from IPython.display import Image
        from PIL import Image as PILImage

        level = 6 if self._key is None and self._live is None else 1
        buf = io.BytesIO()
        PILImage.fromarray(self.rgba(**kwargs)).save(buf, format="png", compress_level=level)
        return Image(data=buf.getvalue(), format="png")


def _animated_artists(fig) -> list:
    """The animated artists of ``fig`` in drawing order: axes by axes, each by z-order, then
    the figure's own (a suptitle)."""
    out = []
    for ax in sorted(fig.axes, key=lambda a: a.get_zorder()):
        out += sorted((a for a in ax.get_children() if a.get_animated()), key=lambda a: a.get_zorder())
    # a suptitle is also one of fig.texts: each artist once, or it is drawn twice (bolder)
    own = dict.fromkeys([*fig.texts, *fig.lines, *fig.patches, *fig.artists, *fig.legends,
                         *(getattr(fig, name) for name in ("_suptitle", "_supxlabel", "_supylabel")
                           if getattr(fig, name, None) is not None)])
    return out + sorted((a for a in own if a.get_animated()), key=lambda a: a.get_zorder())


# ------------------------------------------------------------------ the website's grid

def _decimal(x) -> Decimal:
    """``x`` as the decimal it reads as (0.05 -> Decimal('0.05')), so that grid values are exact."""
    if isinstance(x, (int, np.integer)):
        return Decimal(int(x))
    return Decimal(repr(float(x)))


def _label(v) -> str:
    """The value as the page shows it: the shortest text that reads back as exactly ``v``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    short = format(float(v), "g")
    return short if float(short) == float(v) else repr(float(v))


def _describe_control(name: str, w) -> dict:
    """Kind, every value the control can take (a slider's step grid) and the default's index."""
    from ipywidgets import widgets as ipw

    if isinstance(w, (ipw.Checkbox, ipw.ToggleButton)):
        values = [False, True]
        return {"name": name, "kind": "checkbox", "values": values, "default": values.index(bool(w.value))}
    if isinstance(w, ipw.widget_selection._Selection):
        values = list(w._options_values)
        labels = [str(lab) for lab in w._options_labels]
        return {"name": name, "kind": "select", "values": values, "labels": labels, "default": w.index}
    if isinstance(w, (ipw.IntSlider, ipw.FloatSlider)):
        lo, hi, step = _decimal(w.min), _decimal(w.max), _decimal(w.step)
        if step <= 0:
            raise ValueError(f"control {name!r}: the slider's step must be positive, got {w.step}")
        count = int((hi - lo) / step) + 1
        kind = int if isinstance(w, ipw.IntSlider) else float
        values = [kind(lo + k * step) for k in range(count)]
        k_def = (_decimal(w.value) - lo) / step
        if k_def != k_def.to_integral_value():
            raise ValueError(f"control {name!r}: the default {w.value} is not on the slider's grid "
                             f"min + k*step (min={w.min}, step={w.step})")
        return {"name": name, "kind": "slider", "values": values, "default": int(k_def),
                "min": lo, "step": step}
    raise TypeError(f"control {name!r}: the website cannot precompute a {type(w).__name__}; "
                    "use a slider, a dropdown or a checkbox")


def _auto_indices(c: dict) -> list[int]:
    """All of a dropdown's or checkbox's options; SLIDER_VALUES spread values of a slider,
    its minimum, default and maximum among them."""
    count = len(c["values"])
    if c["kind"] != "slider" or count <= SLIDER_VALUES:
        return list(range(count))
    picks = {int(round(x)) for x in np.linspace(0, count - 1, SLIDER_VALUES)}
    if c["default"] not in picks:
        picks.discard(min(picks - {0, count - 1}, key=lambda k: abs(k - c["default"])))
        picks.add(c["default"])
    return sorted(picks)


def _indices_of(c: dict, chosen) -> list[int]:
    """Indices of the chapter's chosen values among the control's values (checked)."""
    if chosen is None:
        return _auto_indices(c)
    if isinstance(chosen, (str, bytes)) or not hasattr(chosen, "__iter__"):
        raise TypeError(f"web values of control {c['name']!r} must be a list of values or None, got {chosen!r}")
    out = []
    for v in chosen:
        if c["kind"] == "slider":
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"web value {v!r} of slider {c['name']!r} must be a number")
            k = (_decimal(v) - c["min"]) / c["step"]
            if not (k == k.to_integral_value() and 0 <= k < len(c["values"])):
                raise ValueError(f"web value {v!r} of control {c['name']!r} is not one of the slider's "
                                 f"values {c['values'][0]}, {c['values'][0]} + step, ..., {c['values'][-1]}")
            out.append(int(k))
        else:
            matches = [i for i, x in enumerate(c["values"]) if x == v and type(x) is type(v)]
            matches = matches or [i for i, x in enumerate(c["values"]) if x == v]
            if not matches:
                raise ValueError(f"web value {v!r} of control {c['name']!r} is not one of its options "
                                 f"{c['values']}")
            out.append(matches[0])
    if not out:
        raise ValueError(f"web values of control {c['name']!r}: the list is empty")
    return sorted(set(out))


class WebGrid:
    """The settings of a widget that the website precomputes.

    Parameters
    ----------
    controls : dict name -> ipywidgets control
        As made by :func:`build_controls`.
    web : None, dict or list of dicts
        ``None``: every combination of every control's values, a slider getting
        ``SLIDER_VALUES`` values spread over its range (its minimum, default and maximum among
        them) and a dropdown or checkbox all its options. A dict ``{name: values}`` sets the
        values of some controls (``None`` keeps the automatic ones); still every combination.
        A list of dicts is a list of *blocks*: the website computes every combination within a
        block, with the controls outside it at their defaults, and the union of the blocks. A
        control in no block gets a block of its own (varied alone around the defaults).

    Attributes
    ----------
    controls : list of dict
        ``name``, ``kind`` ('slider', 'select', 'checkbox'), ``values`` (on the website),
        ``labels`` (as the page shows them) and ``default`` (index into ``values``).
    blocks : list of list of str
    settings : list of tuple of int
        One index into each control's ``values`` per frame; the defaults first.

    Raises
    ------
    ValueError
        If a value is not one the live control can take, a slider lacks its minimum, default
        or maximum or has fewer than 5 values (where it has as many), a dropdown or checkbox
        lacks an option, or there are more than ``MAX_FRAMES`` settings.
    """

    def __init__(self, controls: dict, web=None):
        full = [_describe_control(name, w) for name, w in controls.items()]
        names = [c["name"] for c in full]
        if web is None:
            web = [{}]
            blocks = [{n: None for n in names}]
        elif isinstance(web, dict):
            blocks = [{n: web.get(n) for n in names}]
            web = [web]
        elif isinstance(web, (list, tuple)) and all(isinstance(b, dict) for b in web) and web:
            blocks = [dict(b) for b in web]
            seen = {n for b in blocks for n in b}
            blocks += [{n: None} for n in names if n not in seen]
        else:
            raise TypeError(f"web must be None, a dict {{control: values}} or a non-empty list of such dicts, got {web!r}")
        for b in web:
            for n in b:
                if n not in names:
                    raise ValueError(f"web names {n!r}, which is not one of the controls {names}")
        chosen = [{n: set(_indices_of(full[names.index(n)], v)) for n, v in b.items()} for b in blocks]
        self.controls = []
        for i, c in enumerate(full):
            idx = set().union(*(b.get(c["name"], set()) for b in chosen)) | {c["default"]}
            self._check_coverage(c, idx)
            keep = sorted(idx)
            remap = {k: j for j, k in enumerate(keep)}
            for b in chosen:
                if c["name"] in b:
                    b[c["name"]] = sorted(remap[k] for k in b[c["name"]])
            labels = c.get("labels") or [_label(v) for v in c["values"]]
            self.controls.append({"name": c["name"], "kind": c["kind"],
                                  "values": [c["values"][k] for k in keep],
                                  "labels": [labels[k] for k in keep], "default": remap[c["default"]]})
        self.blocks = [list(b) for b in chosen]
        default = tuple(c["default"] for c in self.controls)
        settings = {default: None}
        for b in chosen:
            axes = [b.get(c["name"], [c["default"]]) for c in self.controls]
            settings.update(dict.fromkeys(itertools.product(*axes)))
        self.settings = list(settings)
        if len(self.settings) > MAX_FRAMES:
            raise ValueError(
                f"the website grid has {len(self.settings)} settings > MAX_FRAMES = {MAX_FRAMES}: "
                "give fewer values (web={name: [...]}) or vary some controls one at a time "
                "(web=[{...}, {...}])")

    @staticmethod
    def _check_coverage(c: dict, idx: set) -> None:
        count = len(c["values"])
        if c["kind"] == "slider":
            missing = [what for what, k in (("minimum", 0), ("maximum", count - 1)) if k not in idx]
            if missing:
                raise ValueError(f"web values of slider {c['name']!r} lack its {' and '.join(missing)}")
            if len(idx) < min(5, count):
                raise ValueError(f"slider {c['name']!r} has {len(idx)} values on the website; it needs "
                                 f"at least {min(5, count)} (minimum, default and maximum among them)")
        elif len(idx) < count:
            raise ValueError(f"web values of {c['kind']} {c['name']!r} lack some of its options "
                             f"{c['values']}: the website offers all of them")

    def kwargs(self, setting) -> dict:
        """The plotting function's keyword arguments at one setting."""
        return {c["name"]: c["values"][k] for c, k in zip(self.controls, setting)}

    def describe(self) -> str:
        """Which settings were computed, for the note under the figure."""
        names = [c["name"] for c in self.controls]
        if len(self.blocks) == 1 and len(self.blocks[0]) == len(names):
            return "every combination of the values the controls offer"
        parts = [f"every combination of {_join(b)}" for b in self.blocks if len(b) > 1]
        alone = [b[0] for b in self.blocks if len(b) == 1]
        if alone:
            parts.append(f"{_join(alone)} one at a time")
        return (", and ".join(parts) + " around the defaults; moving a control moves the others "
                "to the nearest computed setting")


def _join(names) -> str:
    names = [f"{n}" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --------------------------------------------------------------------- frames

def encode_frame(pixels) -> tuple[bytes, str]:
    """A website frame: an RGBA picture (or a Figure) reduced to a 256-colour palette, stored
    as lossless WebP.

    The book's figures are flat colours, antialiased lines and translucent bands, which a
    palette holds without visible banding. On a three-panel figure of bands and legends this
    gave 54 kB in 86 ms, against 65 kB for the same palette as PNG and 134 kB for lossless
    WebP in full colour (about 500 ms). Returns (bytes, file extension).
    """
    from PIL import Image as PILImage

    if not isinstance(pixels, np.ndarray):
        pixels = _rgba(pixels)
    buf = io.BytesIO()
    rgb = PILImage.fromarray(pixels).convert("RGB")
    rgb.quantize(256, method=PILImage.Quantize.FASTOCTREE).save(buf, format="webp", lossless=True, method=4)
    return buf.getvalue(), ".webp"


def render_frames(plot_fn, grid: WebGrid, folder) -> list[str]:
    """Draw ``plot_fn`` at every setting of ``grid`` into ``folder``; file names by content.

    The frames are drawn as a live widget draws its updates (:class:`LiveFigure`): the layout
    solved at the defaults (the first setting) holds for every frame, so the axes stay put
    when the reader moves a control, and the frames cost less to draw.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    live = LiveFigure(plot_fn)
    names = []
    for setting in grid.settings:
        data, ext = encode_frame(live.rgba(**grid.kwargs(setting)))
        name = hashlib.sha256(data).hexdigest()[:20] + ext
        path = folder / name
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        names.append(name)
    return names


def _explorer_html(plot_fn, grid: WebGrid, names: list[str], folder: Path) -> str:
    """The website's block: default frame inline, HTML controls on the grid, a note."""
    config = {
        "controls": [{k: c[k] for k in ("name", "kind", "labels", "default")} for c in grid.controls],
        "frames": {",".join(map(str, s)): n for s, n in zip(grid.settings, names)},
    }
    uid = "ng-explorer-" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    default = (folder / names[0]).read_bytes()
    src = "data:image/webp;base64," + base64.b64encode(default).decode()
    rows = []
    for i, c in enumerate(grid.controls):
        cid = f"{uid}-{i}"
        name = html.escape(c["name"])
        if c["kind"] == "slider":
            label = html.escape(c["labels"][c["default"]])
            rows.append(
                f'<div class="ng-control ng-slider"><label for="{cid}">{name}</label>'
                f'<input type="range" id="{cid}" data-control="{i}" min="0" max="{len(c["labels"]) - 1}" '
                f'step="1" value="{c["default"]}" aria-valuetext="{label}">'
                f'<output for="{cid}">{label}</output></div>')
        elif c["kind"] == "select":
            opts = "".join(f'<option value="{j}"{" selected" if j == c["default"] else ""}>'
                           f'{html.escape(lab)}</option>' for j, lab in enumerate(c["labels"]))
            rows.append(f'<div class="ng-control ng-select"><label for="{cid}">{name}</label>'
                        f'<select id="{cid}" data-control="{i}">{opts}</select><span></span></div>')
        else:
            checked = " checked" if c["default"] == 1 else ""
            rows.append(f'<div class="ng-control ng-checkbox"><label for="{cid}">{name}</label>'
                        f'<input type="checkbox" id="{cid}" data-control="{i}"{checked}><span></span></div>')
    note = (f"On the website this figure was computed in advance at {len(names)} settings: "
            f"{grid.describe()}. Every value shown is one the figure was computed at; for the full "
            "range of each control, run the chapter in Binder (the rocket button at the top of the "
            "page) or in your own Jupyter.")
    alt = f"{plot_fn.__name__} at " + ", ".join(
        f"{c['name']} = {c['labels'][c['default']]}" for c in grid.controls)
    return (
        f'<div class="ng-explorer" id="{uid}" data-ng-explorer="{html.escape(json.dumps(config))}">'
        f'<img class="ng-explorer-figure" src="{src}" alt="{html.escape(alt)}" data-frame="{names[0]}">'
        f'<div class="ng-explorer-controls">{"".join(rows)}</div>'
        f'<p class="ng-explorer-note">{html.escape(note)}</p></div>')


@contextlib.contextmanager
def _without_comms():
    """Make ipywidgets controls that open no comm with the frontend.

    A widget opens a comm when it is made, and the notebook executor (nbclient) saves the
    state of every comm-backed widget in the executed notebook, where myst-nb would put it
    on the page as controls that, with no kernel, do nothing. In the build the controls
    only describe the website's grid, so they get the ``comm`` package's silent comm.
    """
    import comm

    real = comm.create_comm
    comm.create_comm = comm.DummyComm
    try:
        yield
    finally:
        comm.create_comm = real


class _WebExplorer:
    """The build's output: HTML for the website, the default frame as PNG for everything else."""

    def __init__(self, html_text: str, png: bytes):
        self._html, self._png = html_text, png

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self._html, "image/png": base64.b64encode(self._png).decode(),
                "text/plain": "<interactive figure: run the notebook for live controls>"}


# ---------------------------------------------------------------------- explore

def explore(plot_fn, web=None, **controls) -> None:
    """Show ``plot_fn``'s figure with controls: live in Jupyter, precomputed on the website.

    Parameters
    ----------
    plot_fn : callable returning a matplotlib Figure
        Its keyword defaults are the static figure's settings.
    web : None, dict or list of dicts
        Which settings the website precomputes (ignored in a live kernel); see
        :class:`WebGrid`. The default is every combination, with 5 values per slider.
    **controls
        ``ipywidgets.interact`` abbreviations, e.g. ``eta=(0.01, 1.0, 0.01)``,
        ``batch_size=[1, 2, 5, 10]``, or ready-made widgets.

    Notes
    -----
    In a live kernel: the figure at the defaults, then the controls, which redraw the same
    output in place. In the book build (``NOISEGEOM_WIDGET_FRAMES`` names the frames'
    folder): one output whose HTML holds the frames of :class:`WebGrid` ``(controls, web)``
    and controls that step through exactly those settings, and whose PNG is the figure at
    the defaults.

    Examples
    --------
    >>> explore(plot_sgd_vs_gd, eta=(0.05, 0.9, 0.05), batch_size=[1, 2, 5, 20])  # doctest: +SKIP
    >>> explore(plot_fn, n=(10, 200, 10), d=(20, 200, 10), noise=(0.0, 2.0, 0.1),
    ...         web=[{"n": [10, 40, 100, 200], "d": None}, {"noise": None}])  # doctest: +SKIP
    """
    from IPython.display import display
    from ipywidgets import VBox

    folder = os.environ.get(FRAMES_ENV)
    if folder:
        with _without_comms():          # the controls only describe the grid here
            made, _, _ = build_controls(plot_fn, **controls)
            grid = WebGrid(made, web)
            for w in made.values():
                w.close()
        names = render_frames(plot_fn, grid, folder)
        fig = plot_fn(**grid.kwargs(grid.settings[0]))
        png = _to_image(fig).data
        plt.close(fig)
        display(_WebExplorer(_explorer_html(plot_fn, grid, names, Path(folder)), png))
        return
    made, values, _ = build_controls(plot_fn, **controls)
    if web is not None:
        WebGrid(made, web)                       # the same checks as in the build, at once
    live = LiveFigure(plot_fn)
    handle = display(live.image(**values()), display_id=True)

    def on_change(_change):
        img = live.image(**values())
        if handle is not None:  # outside a kernel display() prints and returns no handle
            handle.update(img)

    for w in made.values():
        w.observe(on_change, names="value")
    display(VBox(list(made.values())))
