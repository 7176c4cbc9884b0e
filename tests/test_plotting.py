"""The figure helpers: menus show exactly one entry's traces, the explorer starts in a
usable state and follows its controls."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from ftgeo import plotting  # noqa: E402


def view(labels, n_layers=3, n_components=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_layers, len(labels), 6))
    return plotting.pca_view(X, labels, n_components=n_components)


def shown(fig, entry):
    visible = fig.layout.updatemenus[0].buttons[entry].args[0]["visible"]
    return [t.name for t, v in zip(fig.data, visible, strict=True) if v]


def test_explorer_starts_with_every_label_and_follows_the_task():
    views = {(state, task): view(labels) for state in ("pretrained", "finetuned")
             for task, labels in (("pos", ["a", "b"] * 20), ("dep", ["x", "y", "z"] * 10))}
    box = plotting.explorer(views)
    (state, task), (layer, label) = box.children[0].children, box.children[1].children
    assert (state.value, task.value, layer.value) == ("finetuned", "pos", 2)
    assert label.value == "(all)" and list(label.options) == ["(all)", "a", "b"]
    task.value = "dep"
    assert list(label.options) == ["(all)", "x", "y", "z"] and label.value == "(all)"
    label.value = "y"  # redraws without error
    with pytest.raises(ValueError, match="empty"):
        plotting.explorer({})


def test_pca3d_menu_shows_one_view_at_a_time():
    views = {"pos: pretrained": view(["a", "b"] * 20, n_components=3),
             "pos: finetuned": view(["a", "b", "c"] * 10, n_components=3, seed=1)}
    fig = plotting.pca3d_menu(views, title="clusters")
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == list(views)
    assert shown(fig, 0) == ["a", "b"] and shown(fig, 1) == ["a", "b", "c"]
    assert all(t.type == "scatter3d" for t in fig.data)
    with pytest.raises(ValueError, match="n_components=3"):
        plotting.pca3d_menu({"flat": view(["a", "b"] * 5)})


def test_menu_figure_panels_and_diagonal():
    panels = {"pos": {"pretrained": ([1, 2], [0.5, 0.7]), "finetuned": ([1, 2], [0.9, 0.95])},
              "dep": {"labels": ([1.0, 3.0], [2.0, 1.0], ["nsubj", "obj"])}}
    fig = plotting.menu_figure(panels, diagonal=True, mode="markers")
    assert shown(fig, 0) == ["pretrained", "finetuned", "no change"]
    assert shown(fig, 1) == ["labels", "no change"]
    diagonal = [t for t in fig.data if t.name == "no change"][1]
    assert list(diagonal.x) == list(diagonal.y) == [1.0, 3.0]  # spans the panel's values
    assert list(fig.data[3].text) == ["nsubj", "obj"]
    finetuned = plotting.STATE_STYLE["finetuned"]["color"]
    assert fig.data[1].marker.color == fig.data[1].line.color == finetuned  # a state keeps its look
    assert fig.data[3].marker.color is None  # other traces take plotly's colours


def test_claims_figure_counts_verdicts_per_paper():
    claims = pd.DataFrame({"paper": ["A", "A", "B"], "section": ["1", "2", "3"],
                           "claim": ["x", "y", "z"], "verdict": ["holds", "does not hold", "holds"]})
    fig = plotting.claims_figure(claims)
    by_verdict = {t.name: list(t.y) for t in fig.data}
    assert by_verdict == {"holds": [1, 1], "does not hold": [1, 0], "not testable here": [0, 0]}
    assert "1: x" in fig.data[0].customdata[0]


# -- chapters 05 and 07 ----------------------------------------------------------------------
def _min_distance_tables():
    steps = pd.Index([0, 5, 10], name="step")
    return {"pos": pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [1.0, 1.0, 1.5], "c": [2.0, 1.8, 1.0],
                                 "d": [0.5, 0.6, 0.7]}, index=steps),
            "dep": pd.DataFrame({"x": [1.0, 3.0, 2.0], "y": [2.0, 2.0, 2.0]}, index=steps)}


def test_min_distance_extremes_draws_the_most_and_least_grown_labels():
    fig = plotting.min_distance_extremes(_min_distance_tables(), {"pos": 10, "dep": 20}, n_extreme=1)
    pos, dep = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["pos", "dep"]
    assert [line.get_label() for line in pos.get_lines()] == ["a (+)", "c (-)"]
    assert list(pos.get_lines()[0].get_xdata()) == [0.0, 0.5, 1.0]  # fraction of training
    assert [line.get_linestyle() for line in dep.get_lines()] == ["-", "--"]


def test_centroid_paths_figure_one_panel_per_task_star_at_the_end():
    from ftgeo.spatial import CentroidPaths

    rng = np.random.default_rng(0)
    paths = {"pos": CentroidPaths(np.array([0, 5, 10, 15]), ("a", "b", "c"), rng.normal(size=(4, 3, 2))),
             "dep": CentroidPaths(np.array([0, 7]), ("x", "y"), rng.normal(size=(2, 2, 2)))}
    fig = plotting.centroid_paths_figure(paths, title="paths")
    assert [t.name for t in fig.data] == ["pos: a", "pos: b", "pos: c", "dep: x", "dep: y"]
    assert [a.text for a in fig.layout.annotations] == ["pos", "dep"]
    assert list(fig.data[0].marker.symbol) == ["circle"] * 3 + ["star"]
    assert list(fig.data[0].marker.size) == [10, 5, 5, 14] and list(fig.data[3].customdata) == [0, 7]
    assert fig.data[3].xaxis == "x2"


def test_displacement_menu_shows_one_layer_of_one_task():
    rng = np.random.default_rng(1)
    points = {"pos": rng.normal(size=(3, 4, 2)), "dep": rng.normal(size=(2, 5, 2))}
    labels = {"pos": list("abcd"), "dep": list("vwxyz")}
    fig = plotting.displacement_menu(points, labels)
    assert len(fig.data) == 5 and [t.visible for t in fig.data] == [False, False, True, False, False]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["pos", "dep"]
    assert shown(fig, 1) == ["dep layer 1"]  # a task opens at its last layer
    slider = fig.layout.sliders[0]
    assert slider.active == 2 and [s.label for s in slider.steps] == ["0", "1", "2"]
    assert [i for i, v in enumerate(slider.steps[0].args[0]["visible"]) if v] == [0]
    dep_slider = fig.layout.updatemenus[0].buttons[1].args[1]["sliders"][0]
    assert len(dep_slider["steps"]) == 2 and dep_slider["steps"][0]["args"][0]["visible"][3]
    lim = np.abs(points["pos"]).max() * 1.15
    assert fig.layout.xaxis.range[1] == pytest.approx(lim) and list(fig.data[0].text) == list("abcd")
    with pytest.raises(ValueError, match="shape"):
        plotting.displacement_menu({"pos": points["pos"]}, {"pos": ["a"]})


def test_similarity_and_motion_by_layer_draw_a_line_per_layer_and_task():
    sim = pd.DataFrame({0: [1.0, 1.0, np.nan], 10: [0.9, 0.8, 0.7]}, index=pd.Index([1, 2, 3], name="layer"))
    fig = plotting.similarity_by_layer({"pos": sim, "dep": sim}, {"pos": 10, "dep": 20})
    lines = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("layer")]
    assert [line.get_label() for line in lines] == ["layer 1", "layer 2"]  # layer 3 has a gap
    assert list(fig.axes[1].get_lines()[0].get_xdata()) == [0.0, 0.5]
    motion = pd.DataFrame({"relative range": [0.1, 0.2], "relative mean motion": [0.05, 0.1]},
                          index=pd.Index([0, 1], name="layer"))
    fig = plotting.motion_by_layer({"pos": motion, "dep": 2 * motion})
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[1].get_lines()[1].get_ydata()) == [0.1, 0.2]



def test_spatial_figures_show_the_mean_and_the_range_over_fine_tuning_seeds():
    from matplotlib.collections import PolyCollection

    first = _min_distance_tables()
    second = {task: d * 2 for task, d in first.items()}
    fig = plotting.min_distance_extremes(first, {"pos": 10, "dep": 20}, n_extreme=1, seeds=[first, second])
    pos = fig.axes[0]
    assert [line.get_label() for line in pos.get_lines()] == ["a (+)", "c (-)"]
    np.testing.assert_allclose(pos.get_lines()[0].get_ydata(), 1.5 * first["pos"]["a"])  # the mean
    assert sum(isinstance(c, PolyCollection) for c in pos.collections) == 2  # one band per line
    sim = pd.DataFrame({0: [1.0, 1.0, np.nan], 10: [0.9, 0.8, 0.7]}, index=pd.Index([1, 2, 3], name="layer"))
    fig = plotting.similarity_by_layer({"pos": sim}, {"pos": 10}, seeds=[{"pos": sim}, {"pos": sim - 0.2}])
    lines = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("layer")]
    assert [line.get_label() for line in lines] == ["layer 1", "layer 2"]
    np.testing.assert_allclose(lines[0].get_ydata(), [0.9, 0.8])
    assert len(fig.axes[0].collections) == 2
    motion = pd.DataFrame({"relative range": [0.1, 0.2], "relative mean motion": [0.05, 0.1]},
                          index=pd.Index([0, 1], name="layer"))
    fig = plotting.motion_by_layer({"pos": motion}, seeds=[{"pos": motion}, {"pos": 3 * motion}])
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.1, 0.2])
    assert [len(ax.collections) for ax in fig.axes] == [1, 1] and "2 seeds" in fig.axes[0].get_title()


def test_centroid_paths_of_every_seed_share_a_colour_per_label():
    from ftgeo.spatial import CentroidPaths

    rng = np.random.default_rng(0)
    paths = {"pos": [CentroidPaths(np.array([0, 5]), ("a", "b"), rng.normal(size=(2, 2, 2)))
                     for _ in range(2)]}
    fig = plotting.centroid_paths_figure(paths)
    assert [t.name for t in fig.data] == ["pos: a, seed 0", "pos: b, seed 0",
                                          "pos: a, seed 1", "pos: b, seed 1"]
    assert fig.data[0].line.color == fig.data[2].line.color and fig.data[2].line.dash == "dot"


def test_cross_task_figures_draw_every_seed():
    from ftgeo.probes import ProbeGridResult
    from ftgeo.spatial import ClusterSummary, ProbedState

    def state(factor):
        D = factor * np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], float)
        summary = ClusterSummary(np.arange(3), np.arange(3), np.repeat(np.arange(3), 6), D)
        return ProbedState(ProbeGridResult((8, 8), 1e-3, 0.9, np.array([0.8, 0.8]), None), summary, 1.0)

    seeds = [{"pretrained": state(1.0), "finetuned on pos": state(0.5)}, {"finetuned on pos": state(2.0)}]
    fig = plotting.cross_task_scatter(seeds, target="ps-fxn")
    assert [ax.get_title() for ax in fig.axes] == ["finetuned on pos"]
    assert len(fig.axes[0].collections) == 2  # one scatter per fine-tuning seed
    menu = plotting.cross_task_menu(seeds, ["x", "y", "z"], target="ps-fxn")
    assert [t.name for t in menu.data] == ["seed 0", "seed 1", "no change"]
    assert list(menu.data[1].y) == [2.0, 2.0, 4.0] and list(menu.data[0].text) == ["x", "y", "z"]


# -- chapters 02, 03 and 04: before and after fine-tuning, per task -------------------------
def _states(tasks, value):
    return {(task, state): value for task in tasks for state in ("pretrained", "finetuned")}


def test_dev_accuracy_and_layer_curves_draw_a_panel_per_task():
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    runs = {task: SimpleNamespace(steps=np.array([0, 5, 10]), n_steps=10, settings=SimpleNamespace(epochs=2),
                                  dev_accuracy=np.array([0.1, 0.5, 0.7])) for task in ("pos", "dep")}
    fig = plotting.dev_accuracy_figure(runs)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.0, 1.0, 2.0]  # epochs
    fig = plotting.layer_curves(_states(["pos", "dep", "trec-50"], np.linspace(0, 1, 4)), first_layer=1,
                                reference=1, ylabel="clusters / labels")
    assert [ax.get_title() for ax in fig.axes] == ["pos", "dep", "trec-50"]
    assert all(len(ax.lines) == 3 for ax in fig.axes)  # two states and the reference line
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["pretrained", "finetuned"]
    plt.close("all")
    with pytest.raises(ValueError, match="empty"):
        plotting.layer_curves({})


def test_state_bars_and_the_probe_figure_draw_a_bar_per_task_and_state():
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from ftgeo.probes import ProbeGridResult

    tasks = ["pos", "dep", "trec-50"]
    fig = plotting.state_bars(_states(tasks, 1.0), reference=1, title="clusters per label")
    (ax,) = fig.axes
    assert len(ax.patches) == 6 and len(ax.lines) == 1  # the bars and the reference line
    assert [t.get_text() for t in ax.get_xticklabels()] == tasks
    mlp = _states(tasks, ProbeGridResult((16, 16), 1e-3, 0.5, np.array([0.5, 0.7]), None))
    fig = plotting.probe_similarity_figure(mlp, _states(tasks, 0.8))
    bars, lines = fig.axes
    assert len(bars.patches) == 6
    assert sum(isinstance(c, ErrorbarContainer) for c in bars.containers) == 2  # one per state
    assert len(lines.lines) == 3  # a line per state and the zero line
    plt.close("all")


def test_a_state_and_a_task_look_the_same_in_every_figure():
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    tasks = ["pos", "dep", "trec-50"]
    colour = {state: style["color"] for state, style in plotting.STATE_STYLE.items()}
    fig = plotting.layer_curves(_states(tasks, np.linspace(0, 1, 4)))
    assert [(to_hex(line.get_color()), line.get_linestyle()) for line in fig.axes[0].lines] == [
        (colour["pretrained"], "--"), (colour["finetuned"], "-")]
    fig = plotting.state_bars(_states(tasks, 1.0))
    assert {to_hex(bar.get_facecolor()) for bar in fig.axes[0].patches} == set(colour.values())
    runs = {task: SimpleNamespace(steps=np.array([0, 10]), n_steps=10, settings=SimpleNamespace(epochs=1),
                                  dev_accuracy=np.array([0.1, 0.7])) for task in tasks}
    by_task = [plotting.task_colour(tasks, task) for task in tasks]
    assert len(set(by_task)) == 3
    fig = plotting.dev_accuracy_figure(runs)
    assert [to_hex(line.get_color()) for line in fig.axes[0].lines] == by_task
    motion = pd.DataFrame({"relative range": [0.1, 0.2], "relative mean motion": [0.05, 0.1]})
    fig = plotting.motion_by_layer(dict.fromkeys(tasks, motion))
    assert [to_hex(line.get_color()) for line in fig.axes[1].lines] == by_task
    curves = plotting.training_curves({task: SimpleNamespace(**vars(run), losses=[1.0, 0.5])
                                       for task, run in runs.items()})
    assert [t.line.color for t in curves.data[::2]] == by_task  # the loss traces
    plt.close("all")
    with pytest.raises(ValueError, match="not among the tasks"):
        plotting.task_colour(tasks, "sst-2")


def test_distance_scatter_has_a_trace_per_task_and_state_with_a_point_per_shared_pair():
    from ftgeo.spatial import ClusterSummary

    def summary(classes):
        n = len(classes)
        D = np.arange(n * n, dtype=float).reshape(n, n)
        return ClusterSummary(np.asarray(classes), np.asarray(classes), np.zeros(0, int), D + D.T)

    clusters = {(task, state, split): summary([0, 1, 2] if split == "train" or task == "pos" else [0, 2])
                for task in ("pos", "dep") for state in ("pretrained", "finetuned")
                for split in ("train", "test")}
    fig = plotting.distance_scatter(clusters, {"pos": ["a", "b", "c"], "dep": ["x", "y", "z"]})
    assert [t.name for t in fig.data] == ["pretrained", "finetuned"] * 2
    assert [len(t.x) for t in fig.data] == [3, 3, 1, 1]  # dep's test set holds labels 0 and 2 only
    assert list(fig.data[2].text) == ["x / z"]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
