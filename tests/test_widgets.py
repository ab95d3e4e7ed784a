"""noisegeom.widgets and noisegeom.plotting: controls, rendering, explore outside a kernel.

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
    the figures handed to the PNG step are recorded too."""
    import IPython.display
    import ipywidgets

    shown, updates, drawn = [], [], []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    def fake_display(*objs, display_id=None, **kw):
        shown.append((objs, display_id))
        return Handle() if display_id else None

    real_to_image = ng.widgets._to_image

    def spy_to_image(fig):
        drawn.append(fig)
        return real_to_image(fig)

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(ng.widgets, "_to_image", spy_to_image)
    before = set(plt.get_fignums())
    ng.widgets.explore(plot_line, slope=(0.0, 2.0, 0.5), n=(5, 20))
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
