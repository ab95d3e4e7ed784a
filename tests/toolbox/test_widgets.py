"""Tests of noisegeom.widgets and noisegeom.plotting: controls, rendering, explore outside a kernel.

Timings are not tested here (scripts/bench.py reports the render time).
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import noisegeom as ng  # noqa: E402


def plot_line(slope=1.0, kind="a", n=10):
    fig, ax = plt.subplots()
    x = np.arange(n)
    ax.plot(x, slope * x, label=kind)
    ax.set_xlabel("step $t$")
    ax.legend()
    return fig


def test_build_controls_makes_widgets_and_render_returns_a_figure():
    import ipywidgets

    made, values, render = ng.widgets.build_controls(plot_line, slope=(0.0, 2.0, 0.5), kind=["a", "b"], n=(5, 20))
    assert set(made) == {"slope", "kind", "n"}
    assert isinstance(made["slope"], ipywidgets.FloatSlider) and made["slope"].value == 1.0
    assert isinstance(made["kind"], ipywidgets.Dropdown) and made["kind"].value == "a"
    assert isinstance(made["n"], ipywidgets.IntSlider) and made["n"].value == 10
    assert all(w.description == k for k, w in made.items())
    assert made["slope"].continuous_update is False
    assert values() == {"slope": 1.0, "kind": "a", "n": 10}
    made["slope"].value = 1.5
    made["kind"].value = "b"
    fig, seconds = render()
    assert isinstance(fig, Figure) and seconds >= 0
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), 1.5 * np.arange(10)) and line.get_label() == "b"
    plt.close(fig)
    # a ready-made widget is accepted as is
    w = ipywidgets.IntSlider(value=7, min=1, max=9)
    made2, values2, _ = ng.widgets.build_controls(plot_line, n=w)
    assert made2["n"] is w and values2() == {"n": 7}


def test_explore_displays_the_static_figure_then_the_controls(monkeypatch):
    """Replace IPython's display by a recorder: first the figure (with a display id), then a VBox;
    the figures the plotting function made are recorded too."""
    import IPython.display
    import ipywidgets

    shown, updates, drawn = [], [], []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    def fake_display(*objs, display_id=None, **kw):
        shown.append((objs, display_id))
        return Handle() if display_id else None

    def plot_recorded(slope=1.0, kind="a", n=10):
        drawn.append(plot_line(slope, kind, n))
        return drawn[-1]

    monkeypatch.setattr(IPython.display, "display", fake_display)
    before = set(plt.get_fignums())
    ng.widgets.explore(plot_recorded, slope=(0.0, 2.0, 0.5), n=(5, 20))
    assert len(shown) == 2
    (img,), did = shown[0]
    assert isinstance(img, IPython.display.Image) and img.format == "png" and did is True   # static figure
    assert np.allclose(drawn[0].axes[0].lines[0].get_ydata(), np.arange(10))              # at the defaults
    (box,), _ = shown[1]
    assert isinstance(box, ipywidgets.VBox) and len(box.children) == 2
    assert set(plt.get_fignums()) == before                      # figures are closed, not shown twice
    slope = next(w for w in box.children if w.description == "slope")
    slope.value = 2.0                                            # a control redraws the same output
    assert len(updates) == 1 and isinstance(updates[0], IPython.display.Image)
    assert updates[0].data != img.data
    assert np.allclose(drawn[1].axes[0].lines[0].get_ydata(), 2 * np.arange(10))
    assert set(plt.get_fignums()) == before


def plot_panels(slope=1.0, panels=2):
    fig, axes = plt.subplots(1, panels, figsize=(6, 3), dpi=50, layout="constrained", squeeze=False)
    for ax in axes.ravel():
        ax.plot(np.arange(10), slope * np.arange(10) ** 2)
        ax.set_yscale("log")
        ax.set_title(rf"slope $\alpha$ = {slope:.3g}")
    return fig


def test_live_figure_solves_the_layout_once_and_reuses_it(monkeypatch):
    """Updates of the same figure skip constrained layout and keep the first drawing's axes
    positions; a figure of another structure is laid out afresh; the picture matches a full
    layout to within a pixel's shift of the axes."""
    import io

    from matplotlib import layout_engine
    from PIL import Image

    calls = []
    real = layout_engine.do_constrained_layout
    monkeypatch.setattr(layout_engine, "do_constrained_layout",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    live = ng.widgets.LiveFigure(plot_panels)
    first = live.image()
    assert len(calls) == 1
    positions = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: positions.append([ax.get_position().bounds for ax in fig.axes])
                        or real_close(fig))
    second = live.image(slope=1e3)
    assert len(calls) == 1 and live.reused == 1                  # no second layout solve
    live.image(slope=1e3, panels=3)                              # other axes: solved afresh
    assert len(calls) == 2 and live.reused == 1
    monkeypatch.setattr(plt, "close", real_close)
    full_fig = plot_panels(slope=1e3)
    full = np.asarray(Image.open(io.BytesIO(ng.widgets._to_image(full_fig).data)).convert("RGB"), float)
    assert np.allclose(positions[0], [ax.get_position().bounds for ax in full_fig.axes], atol=0.03)
    real_close(full_fig)
    fast = np.asarray(Image.open(io.BytesIO(second.data)).convert("RGB"), float)
    assert fast.shape == full.shape and np.abs(fast - full).mean() < 8.0
    assert second.data != first.data
    # One renderer draws every update of the same size, cleared in between.
    live = ng.widgets.LiveFigure(plot_panels)
    live.image()
    a = live.image(slope=5.0)
    renderer = live._renderer[1]
    live.image(slope=0.2)
    b = live.image(slope=5.0)
    assert live._renderer[1] is renderer and a.data == b.data
    from matplotlib.mathtext import MathTextParser
    assert MathTextParser._parse_cached.cache_info().maxsize >= 1024


def _png_size(data: bytes) -> tuple:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")   # IHDR width, height


def test_to_image_draws_the_whole_canvas_with_a_layout_engine_else_the_tight_box():
    fig = plt.figure(figsize=(4, 3), dpi=50, layout="constrained")
    fig.add_subplot().plot([0, 1])
    assert _png_size(ng.widgets._to_image(fig).data) == (200, 150)          # constrained layout: as is
    plt.close(fig)
    fig = plt.figure(figsize=(4, 3), dpi=50, layout="none")                 # default margins, no engine:
    fig.add_subplot().plot([0, 1])
    w, h = _png_size(ng.widgets._to_image(fig).data)                        # cropped to the tight box
    assert w < 200 and h < 150
    plt.close(fig)


def test_explore_runs_outside_a_kernel(capsys):
    """Plain Python: IPython's display prints and returns no handle; moving a control must not fail."""
    import IPython.display
    import ipywidgets

    captured = []
    real = IPython.display.display

    def spy(*objs, **kw):
        captured.extend(objs)
        return real(*objs, **kw)

    IPython.display.display = spy
    try:
        ng.widgets.explore(plot_line, slope=(0.0, 2.0, 0.5))
    finally:
        IPython.display.display = real
    assert isinstance(captured[0], IPython.display.Image) and isinstance(captured[1], ipywidgets.VBox)
    assert "Image" in capsys.readouterr().out
    captured[1].children[0].value = 0.5                          # no handle: redraw silently


def test_build_controls_rejects_bad_arguments():
    with pytest.raises(TypeError, match="plot_fn must be callable"):
        ng.widgets.build_controls(42, slope=(0, 1))
    with pytest.raises(ValueError, match="control 'eta' is not a parameter of plot_line"):
        ng.widgets.build_controls(plot_line, eta=(0.1, 1.0))
    with pytest.raises(ValueError, match="cannot build a widget for control 'slope'"):
        ng.widgets.build_controls(plot_line, slope=object())


def test_plotting_helpers():
    ng.plotting.use_book_style()
    assert matplotlib.rcParams["axes.grid"] is True and matplotlib.rcParams["font.size"] == 11
    fig, ax = plt.subplots()
    x = np.arange(5)
    samples = np.arange(5)[:, None] + np.linspace(0, 1, 11)[None, :]   # seeds along axis 1
    line = ng.plotting.band(ax, x, samples, label="sgd", color=ng.plotting.COLORS["sgd"])
    assert np.allclose(line.get_ydata(), x + 0.5)                        # the median over seeds
    poly = ax.collections[0]
    verts = poly.get_paths()[0].vertices
    assert np.isclose(verts[:, 1].min(), 0.1) and np.isclose(verts[:, 1].max(), 4.9)   # 10–90% band
    cs = ng.plotting.contour_loss(ax, lambda T: (T ** 2).sum(1) + 1.0, (-1, 1), (-1, 1), resolution=30)
    assert len(cs.levels) > 3
    plt.close(fig)
    assert fig.number not in plt.get_fignums()


# ------------------------------------------------------------- the website's precomputed grid

def _controls(**controls):
    made, _, _ = ng.widgets.build_controls(plot_line, **controls)
    return made


def plot_flag(slope=1.0, kind="a", n=10, log=False):
    return plot_line(slope, kind, n)


def test_web_grid_defaults_cover_every_option_and_the_ends_of_every_slider():
    made, _, _ = ng.widgets.build_controls(plot_flag, slope=(0.0, 2.0, 0.05), kind=["a", "b", "c"],
                                           n=(5, 20), log=False)
    grid = ng.widgets.WebGrid(made)
    c = {d["name"]: d for d in grid.controls}
    assert c["slope"]["values"] == [0.0, 0.5, 1.0, 1.5, 2.0]            # exact decimals, not 0.15000000000000002
    assert c["slope"]["labels"] == ["0", "0.5", "1", "1.5", "2"] and c["slope"]["values"][c["slope"]["default"]] == 1.0
    assert c["n"]["values"][0] == 5 and c["n"]["values"][-1] == 20 and 10 in c["n"]["values"]
    assert len(c["n"]["values"]) == 5 and all(isinstance(v, int) for v in c["n"]["values"])
    assert c["kind"]["values"] == ["a", "b", "c"] and c["log"]["values"] == [False, True]
    assert len(grid.settings) == 5 * 3 * 5 * 2 == len(set(grid.settings))
    assert grid.kwargs(grid.settings[0]) == {"slope": 1.0, "kind": "a", "n": 10, "log": False}   # defaults first
    assert grid.describe() == "every combination of the values the controls offer"


def test_web_grid_blocks_are_products_around_the_defaults():
    made = _controls(slope=(0.0, 2.0, 0.05), kind=["a", "b"], n=(5, 20))
    grid = ng.widgets.WebGrid(made, [{"slope": [0.0, 0.05, 1.0, 1.95, 2.0], "kind": None}, {"n": [5, 8, 12, 16, 20]}])
    settings = [grid.kwargs(s) for s in grid.settings]
    assert len(settings) == 5 * 2 + 5 == len({tuple(s.values()) for s in settings})   # 10 in the block, n alone
    assert {"slope": 0.05, "kind": "b", "n": 10} in settings and {"slope": 1.0, "kind": "a", "n": 12} in settings
    assert {"slope": 0.05, "kind": "a", "n": 12} not in settings                      # n only at the defaults
    c = {d["name"]: d for d in grid.controls}
    assert c["n"]["values"] == [5, 8, 10, 12, 16, 20]                                 # the default is added
    assert grid.describe().startswith("every combination of slope and kind, and n one at a time around the defaults")
    one = ng.widgets.WebGrid(made, {"slope": [0.0, 0.5, 1.0, 1.5, 2.0]})           # a dict: still every combination
    assert len(one.settings) == 5 * 2 * 5


@pytest.mark.parametrize("web, error, match", [
    ({"slope": [0.33, 0.0, 2.0, 1.0, 0.5]}, ValueError, "0.33 of control 'slope' is not one of the slider's values"),
    ({"slope": [0.5, 1.0]}, ValueError, "slider 'slope' lack its minimum and maximum"),
    ({"slope": [0.0, 1.0, 2.0]}, ValueError, "slider 'slope' has 3 values on the website; it needs at least 5"),
    ({"kind": ["a"]}, ValueError, "select 'kind' lack some of its options"),
    ({"kind": ["z", "a", "b"]}, ValueError, "web value 'z' of control 'kind' is not one of its options"),
    ({"eta": [1]}, ValueError, "web names 'eta', which is not one of the controls"),
    ({"slope": "all"}, TypeError, "web values of control 'slope' must be a list"),
    ({"slope": ["x", 0.0, 2.0]}, TypeError, "must be a number"),
    ("everything", TypeError, "web must be None, a dict"),
    ([], TypeError, "web must be None, a dict"),
])
def test_web_grid_rejects_bad_specifications(web, error, match):
    with pytest.raises(error, match=match):
        ng.widgets.WebGrid(_controls(slope=(0.0, 2.0, 0.05), kind=["a", "b"]), web)
    with pytest.raises(error, match=match):                   # a live kernel checks it at once too
        ng.widgets.explore(plot_line, slope=(0.0, 2.0, 0.05), kind=["a", "b"], web=web)


def test_web_grid_refuses_too_many_frames_and_off_grid_defaults(monkeypatch):
    made = _controls(slope=(0.0, 2.0, 0.01), n=(5, 500))
    monkeypatch.setattr(ng.widgets, "MAX_FRAMES", 200)
    slopes = [round(0.01 * k, 2) for k in range(201)]
    with pytest.raises(ValueError, match=r"has 205 settings > MAX_FRAMES = 200"):   # 201 + n's 4 others
        ng.widgets.WebGrid(made, [{"slope": slopes}, {"n": [5, 6, 200, 500]}])
    assert len(ng.widgets.WebGrid(made, [{"slope": slopes[:195] + [2.0]}, {"n": [5, 6, 200, 500]}]).settings) == 200
    with pytest.raises(ValueError, match="the default 1.0 is not on the slider's grid"):
        ng.widgets.WebGrid(_controls(slope=(0.3, 2.0, 0.2)))


def plot_fixed(slope=1.0, kind="a"):
    """A figure whose axes do not depend on the setting: only the line and its label move."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100, layout="constrained")
    ax.plot(np.arange(10), slope * np.arange(10), lw=4, label=kind)
    ax.set(xlim=(0, 9), ylim=(0, 20), xlabel="step $t$")
    ax.legend(loc="upper left")
    return fig


def test_explore_in_the_book_build_writes_the_frames_and_one_html_output(monkeypatch, tmp_path):
    """With NOISEGEOM_WIDGET_FRAMES set: one output (HTML + PNG), no widget comm, a frame file
    per setting, and each frame is the figure drawn at its setting (against a direct drawing)."""
    import base64
    import html
    import io
    import json
    import re

    import IPython.display
    from PIL import Image

    import comm

    shown, opened = [], []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: opened.append(k) or comm.DummyComm(*a, **k))
    ng.widgets.explore(plot_fixed, slope=(0.0, 2.0, 0.5), kind=["a", "b"])         # live: comms
    assert len(opened) >= 3
    shown.clear(), opened.clear()
    monkeypatch.setenv(ng.widgets.FRAMES_ENV, str(tmp_path))
    before = set(plt.get_fignums())
    ng.widgets.explore(plot_fixed, slope=(0.0, 2.0, 0.5), kind=["a", "b"], web={"slope": None})
    assert set(plt.get_fignums()) == before
    assert opened == []          # no widget state for the executed notebook to save
    assert len(shown) == 1
    bundle = shown[0]._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    page = bundle["text/html"]
    cfg = json.loads(html.unescape(re.search(r'data-ng-explorer="([^"]*)"', page).group(1)))
    assert [c["name"] for c in cfg["controls"]] == ["slope", "kind"]
    assert cfg["controls"][0]["labels"] == ["0", "0.5", "1", "1.5", "2"]
    assert len(cfg["frames"]) == 10 and {p.name for p in tmp_path.iterdir()} == set(cfg["frames"].values())
    # The inline figure is the frame at the defaults; the HTML controls start there.
    inline = re.search(r'src="data:image/webp;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(inline) == (tmp_path / cfg["frames"]["2,0"]).read_bytes()
    assert 'max="4" step="1" value="2"' in page and '<option value="0" selected>a</option>' in page
    assert "computed in advance" in page and "Binder" in page

    def pixels(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)

    # Each frame is the figure at its own setting: closest to a direct drawing there.
    settings = {"4,1": (2.0, "b"), "0,0": (0.0, "a"), "2,0": (1.0, "a"), "1,1": (0.5, "b")}
    direct = {}
    for key, (slope, kind) in settings.items():
        fig = plot_fixed(slope=slope, kind=kind)
        direct[key] = pixels(ng.widgets.encode_frame(fig)[0])
        plt.close(fig)
    for key in settings:
        framed = pixels((tmp_path / cfg["frames"][key]).read_bytes())
        dist = {k: np.abs(framed - d).mean() if d.shape == framed.shape else np.inf for k, d in direct.items()}
        assert framed.shape == direct[key].shape and min(dist, key=dist.get) == key, (key, dist)
        assert dist[key] < 1.0, (key, dist)
    default_frame = pixels((tmp_path / cfg["frames"]["2,0"]).read_bytes())
    png = pixels(base64.b64decode(bundle["image/png"]))            # what a notebook viewer shows
    assert png.shape == default_frame.shape and np.abs(png - default_frame).mean() < 2.0
    # A second build with the same figures writes nothing new.
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    ng.widgets.explore(plot_fixed, slope=(0.0, 2.0, 0.5), kind=["a", "b"], web={"slope": None})
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


# ------------------------------------------------------------------- LivePlot: updated in place

def panels_fn(slope=1.0, kind="a", top=20.0):
    """The plain plotting function that ``panels_live`` draws in place."""
    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=60, layout="constrained")
    for ax in axes:
        ax.plot(np.arange(10), np.arange(10) ** 1.5, color="0.6")                # fixed curve
        ax.plot(np.arange(10), slope * np.arange(10), lw=3, label=kind)
        ax.set(xlim=(0, 9), ylim=(0, top), xlabel="step $t$")
        ax.set_title(rf"$\alpha$ = {slope:.2f}")
        ax.legend(loc="upper left")
    fig.suptitle(f"kind {kind}")
    return fig


def panels_make():
    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=60, layout="constrained")
    lines = []
    for ax in axes:
        ax.plot(np.arange(10), np.arange(10) ** 1.5, color="0.6")
        (line,) = ax.plot([], [], lw=3, animated=True)
        lines.append(line)
        ax.set(xlim=(0, 9), xlabel="step $t$")
        ax.title.set_animated(True)
    title = fig.suptitle("", animated=True)
    legends = []

    def update(slope=1.0, kind="a", top=20.0):
        for ax, line in zip(axes, lines):
            line.set_data(np.arange(10), slope * np.arange(10))
            line.set_label(kind)
            if ax.get_ylim() != (0, top):            # a limit change redraws the whole figure
                ax.set_ylim(0, top)
            ax.title.set_text(rf"$\alpha$ = {slope:.2f}")
        for legend in legends:                       # the legend shows the label: redone
            legend.remove()
        legends[:] = [ax.legend(loc="upper left") for ax in axes]
        for legend in legends:
            legend.set_animated(True)
        title.set_text(f"kind {kind}")

    return fig, update


def _moves():
    return [{}, {"slope": 1.7}, {"slope": 0.3, "kind": "b"}, {"slope": 0.3, "kind": "b", "top": 9.0},
            {"slope": 1.1, "kind": "b", "top": 9.0}, {}]


def test_live_plot_updated_in_place_draws_what_a_new_figure_draws():
    """A LivePlot through LiveFigure gives the pixels of the equivalent plotting function at
    every setting of a sequence of moves (same frozen layout), and the fresh figure that calling
    it makes is an ordinary one: every artist drawn, nothing left open in pyplot."""
    live_plot = ng.widgets.LivePlot(panels_make)
    assert live_plot.__name__ == "panels_make"
    before = set(plt.get_fignums())
    in_place, fresh = ng.widgets.LiveFigure(live_plot), ng.widgets.LiveFigure(panels_fn)
    for kwargs in _moves():
        a, b = in_place.rgba(**kwargs), fresh.rgba(**kwargs)
        # the same picture: at most antialiasing where blitted artists meet others (measured
        # 0.003-0.01; a suptitle drawn twice, bolder, gave 0.07)
        assert a.shape == b.shape and np.abs(a.astype(float) - b).mean() < 0.03, kwargs
    assert set(plt.get_fignums()) == before
    assert in_place.reused == len(_moves()) - 1
    animated = ng.widgets._animated_artists(in_place._live[0])
    assert len(animated) == len(set(map(id, animated)))           # each drawn once
    fig = live_plot(slope=0.3, kind="b")
    assert not fig.findobj(lambda a: a.get_animated())
    assert np.allclose(fig.axes[0].lines[1].get_ydata(), 0.3 * np.arange(10))
    assert fig.get_suptitle() == "kind b"
    static = ng.widgets._rgba(fig)
    plt.close(fig)
    plain = panels_fn(slope=0.3, kind="b")
    assert np.abs(static.astype(float) - ng.widgets._rgba(plain)).mean() < 0.03
    plt.close(plain)


def test_live_plot_redraws_only_its_animated_artists_unless_the_figure_is_stale(monkeypatch):
    """Moves that change only animated artists restore the rest from the last full drawing;
    a change of limits (the figure marked stale) draws it in full."""
    from matplotlib.axes import Axes

    axes_draws = []
    real = Axes.draw
    monkeypatch.setattr(Axes, "draw", lambda self, r: axes_draws.append(1) or real(self, r))

    def make():
        fig, ax = plt.subplots(figsize=(4, 3), dpi=50, layout="constrained")
        (line,) = ax.plot([], [], animated=True)
        ax.set_xlim(0, 1)

        def update(slope=1.0, top=2.0):
            line.set_data([0, 1], [0, slope])
            if ax.get_ylim() != (0, top):
                ax.set_ylim(0, top)
        return fig, update

    live = ng.widgets.LiveFigure(ng.widgets.LivePlot(make))
    live.rgba()
    assert live.full_draws == 1 and len(axes_draws) == 1
    frames = [live.rgba(slope=s) for s in (0.5, 1.5, 0.5)]
    assert live.full_draws == 1 and len(axes_draws) == 1            # blitted, axes not redrawn
    assert np.array_equal(frames[0], frames[2]) and not np.array_equal(frames[0], frames[1])
    live.rgba(slope=0.5, top=5.0)
    assert live.full_draws == 2 and len(axes_draws) == 2             # new limits: in full


def test_explore_with_a_live_plot_takes_the_controls_from_update(monkeypatch):
    import IPython.display

    updates = []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda *objs, display_id=None, **kw: shown.append(objs) or (Handle() if display_id else None))
    before = set(plt.get_fignums())
    ng.widgets.explore(ng.widgets.LivePlot(panels_make), slope=(0.0, 2.0, 0.1), kind=["a", "b"])
    (box,) = shown[1]
    slope = next(w for w in box.children if w.description == "slope")
    assert slope.value == 1.0                                        # update's default
    slope.value = 1.7
    assert len(updates) == 1 and updates[0].data != shown[0][0].data
    assert set(plt.get_fignums()) == before
    with pytest.raises(ValueError, match="control 'eta' is not a parameter of panels_make"):
        ng.widgets.explore(ng.widgets.LivePlot(panels_make), eta=(0.0, 1.0))


def test_live_plot_rejects_what_is_not_a_figure_and_an_update():
    with pytest.raises(TypeError, match="LivePlot\\(make\\): make must be callable, got int"):
        ng.widgets.LivePlot(3)
    with pytest.raises(TypeError, match=r"plot_line\(\) must return \(figure, update\)"):
        ng.widgets.LivePlot(plot_line).signature
