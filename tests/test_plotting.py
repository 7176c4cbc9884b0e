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
    views = {(state, task): view(labels) for state in ("untuned", "fine-tuned")
             for task, labels in (("pos", ["a", "b"] * 20), ("dep", ["x", "y", "z"] * 10))}
    box = plotting.explorer(views)
    (state, task), (layer, label) = box.children[0].children, box.children[1].children
    assert (state.value, task.value, layer.value) == ("fine-tuned", "pos", 2)
    assert label.value == "(all)" and list(label.options) == ["(all)", "a", "b"]
    task.value = "dep"
    assert list(label.options) == ["(all)", "x", "y", "z"] and label.value == "(all)"
    label.value = "y"  # redraws without error
    with pytest.raises(ValueError, match="empty"):
        plotting.explorer({})


def test_pca3d_menu_shows_one_view_at_a_time():
    views = {"pos: untuned": view(["a", "b"] * 20, n_components=3),
             "pos: fine-tuned": view(["a", "b", "c"] * 10, n_components=3, seed=1)}
    fig = plotting.pca3d_menu(views, title="clusters")
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == list(views)
    assert shown(fig, 0) == ["a", "b"] and shown(fig, 1) == ["a", "b", "c"]
    assert all(t.type == "scatter3d" for t in fig.data)
    with pytest.raises(ValueError, match="n_components=3"):
        plotting.pca3d_menu({"flat": view(["a", "b"] * 5)})


def test_menu_figure_panels_and_diagonal():
    panels = {"pos": {"pretrained": ([1, 2], [0.5, 0.7]), "fine-tuned": ([1, 2], [0.9, 0.95])},
              "dep": {"labels": ([1.0, 3.0], [2.0, 1.0], ["nsubj", "obj"])}}
    fig = plotting.menu_figure(panels, diagonal=True, mode="markers")
    assert shown(fig, 0) == ["pretrained", "fine-tuned", "no change"]
    assert shown(fig, 1) == ["labels", "no change"]
    diagonal = [t for t in fig.data if t.name == "no change"][1]
    assert list(diagonal.x) == list(diagonal.y) == [1.0, 3.0]  # spans the panel's values
    assert list(fig.data[3].text) == ["nsubj", "obj"]


def test_claims_figure_counts_verdicts_per_paper():
    claims = pd.DataFrame({"paper": ["A", "A", "B"], "section": ["1", "2", "3"],
                           "claim": ["x", "y", "z"], "verdict": ["holds", "does not hold", "holds"]})
    fig = plotting.claims_figure(claims)
    by_verdict = {t.name: list(t.y) for t in fig.data}
    assert by_verdict == {"holds": [1, 1], "does not hold": [1, 0], "not testable here": [0, 0]}
    assert "1: x" in fig.data[0].customdata[0]
