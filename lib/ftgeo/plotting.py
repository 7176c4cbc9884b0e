"""Shared figure helpers: seaborn for static figures, plotly where turning and hovering help.

The book is read with no kernel and no internet, so plotly figures are rendered as HTML
that references a local plotly.js (added to the page by the book's ``_ext/offline_assets``)
and no MathJax from a CDN: call :func:`use_offline_plotly` once in a notebook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._util import check, keyed_tasks

OTHER = "other"
GREY = "#c8c8c8"

#: The one look of each model state in every figure: ``color`` (hex, so plotly takes it too),
#: ``ls`` (matplotlib line style), ``marker`` and ``light``, a paler shade of the same colour
#: where a figure needs two shades of one state (e.g. global and within-cluster bars).
STATE_STYLE = {"pretrained": {"color": "#8c8c8c", "light": "#bfbfbf", "ls": "--", "marker": "s"},
               "finetuned": {"color": "#0173b2", "light": "#a6cee3", "ls": "-", "marker": "o"}}

#: plotly's names for the matplotlib line styles in :data:`STATE_STYLE`.
_PLOTLY_DASH = {"--": "dash", "-": "solid", ":": "dot"}


def state_line(state: str, **kwargs) -> dict:
    """Matplotlib keyword arguments that draw ``state`` in its :data:`STATE_STYLE` (colour, line
    style, marker), updated by ``kwargs``; a state with no style gets only ``kwargs``.

    >>> state_line("finetuned", ms=3)
    {'color': '#0173b2', 'ls': '-', 'marker': 'o', 'ms': 3}
    """
    style = STATE_STYLE.get(state, {})
    return {**{k: style[k] for k in ("color", "ls", "marker") if k in style}, **kwargs}


def task_colour(tasks: Sequence[str], task: str) -> str:
    """The colour of ``task`` in every per-task figure: matplotlib's tab10 by its position in
    ``tasks`` (hex, so plotly takes it too), the same in every chapter that lists the tasks in
    the same order.

    >>> task_colour(["pos", "dep"], "dep")
    '#ff7f0e'
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tasks = list(tasks)
    check(task in tasks, f"task {task!r} is not among the tasks {tasks}")
    return to_hex(colormaps["tab10"](tasks.index(task) % 10))


def use_offline_plotly() -> None:
    """Make ``fig.show()`` emit self-contained HTML (plus plotly's JSON for JupyterLab).

    Plotly's own HTML renderers either embed plotly.js in every notebook or load it from
    a CDN, and all of them add a MathJax tag from a CDN; this renderer does neither.
    """
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    class _LocalHTML(MimetypeRenderer):
        def to_mimebundle(self, fig_dict):
            html = pio.to_html(fig_dict, full_html=False, include_plotlyjs=False,
                               include_mathjax=False, validate=False, default_width="100%",
                               default_height=520)
            return {"text/html": html}

    pio.renderers["ftgeo_html"] = _LocalHTML()
    pio.renderers.default = "plotly_mimetype+ftgeo_html"


@dataclass(frozen=True)
class PCAView:
    """2-D PCA coordinates of a sample of one task's items at every layer.

    coords : ndarray of shape (n_layers, n_samples, n_components), usually 2 components
    labels : ndarray of shape (n_samples,) of str, the label shown (rare labels -> "other")
    explained : ndarray of shape (n_layers, n_components), share of variance of each component
    """

    coords: np.ndarray
    labels: np.ndarray
    explained: np.ndarray
    shown: tuple[str, ...]


def pca_view(X: np.ndarray, y_names: Sequence[str], *, n_points: int = 600, n_labels: int = 8,
             random_state: int = 0, n_components: int = 2) -> PCAView:
    """Project a sample of items to 2-D (or ``n_components``-D) by PCA, separately at every
    layer.

    The sample is stratified towards the ``n_labels`` most frequent labels (the rest are
    drawn as "other"); the sign of each component is aligned with the previous layer's
    so that a layer slider shows motion, not mirror flips.

    Parameters
    ----------
    X : ndarray of shape (n_layers, n_samples, n_features)
    y_names : the string label of every item
    """
    check(np.ndim(X) == 3, f"X must have shape (n_layers, n_samples, n_features), got {np.shape(X)}")
    y_names = np.asarray(y_names, dtype=object)
    check(len(y_names) == X.shape[1], f"y_names has {len(y_names)} entries, X has {X.shape[1]} items")
    rng = np.random.default_rng(random_state)
    idx = np.sort(rng.choice(X.shape[1], size=min(n_points, X.shape[1]), replace=False))
    values, counts = np.unique(y_names, return_counts=True)
    shown = tuple(values[np.argsort(-counts, kind="stable")][:n_labels])
    labels = np.where(np.isin(y_names[idx], shown), y_names[idx], OTHER)
    coords, explained, previous = [], [], None
    for layer in range(X.shape[0]):
        Z = np.asarray(X[layer, idx], dtype=np.float64)
        Z = Z - Z.mean(axis=0)
        U, S, Vt = np.linalg.svd(Z, full_matrices=False)
        P = U[:, :n_components] * S[:n_components]
        if previous is not None:
            P *= np.sign(np.sum(P * previous, axis=0) + 1e-12)
        previous = P
        coords.append(P)
        total = float((S ** 2).sum()) or 1.0
        explained.append((S[:n_components] ** 2) / total)
    return PCAView(np.asarray(coords), labels.astype(str), np.asarray(explained), shown)


def label_colors(shown: Sequence[str]) -> dict[str, str]:
    """A fixed colour per shown label (seaborn's colorblind palette), grey for "other"."""
    import seaborn as sns

    palette = sns.color_palette("colorblind", n_colors=max(len(shown), 1)).as_hex()
    return {**dict(zip(shown, palette, strict=False)), OTHER: GREY}


def pca_slider_figure(view: PCAView, *, title: str = "", axis: str = "layer",
                      values: Sequence | None = None):
    """A plotly scatter of a :class:`PCAView` with a slider over its first axis (works with no
    kernel). ``axis`` names that axis (``"layer"``, or e.g. ``"step"`` for a trajectory) and
    ``values`` labels its positions (default 0, 1, ...)."""
    import plotly.graph_objects as go

    colors = label_colors(view.shown)
    order = [*view.shown, OTHER] if OTHER in set(view.labels) else list(view.shown)
    n_layers = view.coords.shape[0]
    values = list(range(n_layers)) if values is None else list(values)
    check(len(values) == n_layers, f"values has {len(values)} entries for {n_layers} positions")
    fig = go.Figure()
    for layer in range(n_layers):
        for lab in order:
            mask = view.labels == lab
            fig.add_trace(go.Scattergl(
                x=view.coords[layer, mask, 0], y=view.coords[layer, mask, 1], mode="markers",
                name=lab, legendgroup=lab, showlegend=(layer == 0),
                marker={"color": colors[lab], "size": 5, "opacity": 0.8},
                visible=(layer == n_layers - 1),
                hovertemplate=(f"{lab}<br>PC1 %{{x:.2f}}<br>PC2 %{{y:.2f}}"
                               f"<extra>{axis} {values[layer]}</extra>")))
    per = len(order)
    steps = []
    for layer in range(n_layers):
        visible = [False] * (per * n_layers)
        visible[layer * per:(layer + 1) * per] = [True] * per
        ev = view.explained[layer]
        steps.append({"method": "update", "label": str(values[layer]),
                      "args": [{"visible": visible},
                               {"title.text": f"{title} - {axis} {values[layer]} "
                                              f"(PC1 {ev[0]:.0%}, PC2 {ev[1]:.0%} of variance)"}]})
    ev = view.explained[-1]
    fig.update_layout(
        title=f"{title} - {axis} {values[-1]} (PC1 {ev[0]:.0%}, PC2 {ev[1]:.0%} of variance)",
        sliders=[{"active": n_layers - 1, "steps": steps, "currentvalue": {"prefix": f"{axis} "}}],
        xaxis_title="PC1", yaxis_title="PC2", template="simple_white", height=520,
        legend={"itemsizing": "constant"})
    return fig


def _menu(names: Sequence[str], owner: Sequence[int], title: str, *,
          relayout: Callable[[str], dict] | None = None, y: float = 1.15) -> list[dict]:
    """A plotly drop-down that shows the traces of one entry (``owner[i]`` is trace i's) and
    sets the title to ``"<title> - <name>"``, or applies ``relayout(name)`` instead."""
    if len(names) < 2:
        return []
    relayout = relayout or (lambda name: {"title.text": f"{title} - {name}" if title else name})
    buttons = [{"label": name, "method": "update",
                "args": [{"visible": [o == i for o in owner]}, relayout(name)]}
               for i, name in enumerate(names)]
    return [{"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right",
             "y": y, "yanchor": "top"}]


def heatmap_menu(matrices: Mapping[str, np.ndarray], *, ticks: Mapping[str, Sequence] | None = None,
                 title: str = "", axis_title: str = "layer", value_name: str = "CKA",
                 zmin: float | None = None, zmax: float | None = None, colorscale: str = "Viridis"):
    """A plotly heatmap with a drop-down menu over ``matrices`` (name -> square or
    rectangular matrix), values on hover; works with no kernel. ``ticks`` gives each
    matrix's row/column labels (default 0, 1, ...)."""
    import plotly.graph_objects as go

    check(len(matrices) >= 1, "matrices is empty")
    fig = go.Figure()
    names = list(matrices)
    for i, name in enumerate(names):
        M = np.asarray(matrices[name], dtype=float)
        labels = list(ticks[name]) if ticks and name in ticks else list(range(M.shape[0]))
        columns = labels if M.shape[0] == M.shape[1] else list(range(M.shape[1]))
        fig.add_trace(go.Heatmap(
            z=M, x=[str(c) for c in columns], y=[str(r) for r in labels], zmin=zmin, zmax=zmax,
            colorscale=colorscale, visible=(i == 0), name=name,
            hovertemplate=(f"{axis_title} %{{y}} vs %{{x}}<br>{value_name} %{{z:.3f}}"
                           f"<extra>{name}</extra>")))
    fig.update_layout(
        title=f"{title} - {names[0]}" if title else names[0],
        updatemenus=_menu(names, range(len(names)), title),
        xaxis={"title": axis_title, "type": "category"},
        yaxis={"title": axis_title, "type": "category", "autorange": "reversed",
               "scaleanchor": "x"},
        template="simple_white", height=560)
    return fig


def pca_grid(views: Mapping[str, PCAView]):
    """Static seaborn/matplotlib grid: one row per task, one column per layer."""
    import matplotlib.pyplot as plt

    n_tasks = len(views)
    n_layers = max(v.coords.shape[0] for v in views.values())
    fig, axes = plt.subplots(n_tasks, n_layers, figsize=(1.9 * n_layers, 2.0 * n_tasks),
                             squeeze=False)
    for row, (task, view) in enumerate(views.items()):
        colors = label_colors(view.shown)
        point_colors = [colors[lab] for lab in view.labels]
        for layer in range(n_layers):
            ax = axes[row, layer]
            ax.set_xticks([])
            ax.set_yticks([])
            if layer >= view.coords.shape[0]:
                ax.axis("off")
                continue
            ax.scatter(view.coords[layer, :, 0], view.coords[layer, :, 1], c=point_colors, s=3,
                       linewidths=0)
            if row == 0:
                ax.set_title(f"layer {layer}", fontsize=9)
            if layer == 0:
                ax.set_ylabel(task, fontsize=10)
    fig.suptitle("2-D PCA of each layer (colours: most frequent labels; grey: the rest)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_by_layer(table, *, title: str = "Linear-probe test accuracy per layer"):
    """Line plot of a (task x layer) accuracy table (a pandas DataFrame)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = table.reset_index().melt(id_vars=table.index.name or "index", var_name="layer",
                                    value_name="accuracy")
    long = long.rename(columns={table.index.name or "index": "task"})
    tasks = list(dict.fromkeys(long["task"]))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.lineplot(data=long, x="layer", y="accuracy", hue="task", marker="o", ax=ax,
                 palette={task: task_colour(tasks, task) for task in tasks})
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.set_xticks(sorted(long["layer"].unique()))
    ax.legend(frameon=False, fontsize=8)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def label_distribution(counts: Mapping[str, Mapping[str, int]], *, top: int = 20):
    """Bar charts of label frequencies (training split), one panel per task."""
    import matplotlib.pyplot as plt

    n = len(counts)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (task, c) in zip(axes[0], counts.items(), strict=True):
        items = sorted(c.items(), key=lambda kv: -kv[1])
        head = items[:top]
        ax.barh([k for k, _ in head][::-1], [v for _, v in head][::-1], color="#4c72b0")
        rest = sum(v for _, v in items[top:])
        ax.set_title(f"{task} ({len(items)} labels)" + (f"\n+{rest} items in the rest"
                                                        if rest else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, *, dpi: int = 150) -> Path:
    """Save a matplotlib figure (PNG) or a plotly figure (standalone HTML) under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(fig, "savefig"):
        tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    else:
        tmp = path.with_name(f".{path.name}.tmp.html")
        fig.write_html(tmp, include_plotlyjs="directory", full_html=True)
    tmp.replace(path)
    return path


def training_curves(runs: Mapping[str, object], *, smooth: int = 10):
    """Plotly figure of fine-tuning runs: training loss (moving average over ``smooth``
    steps) and dev accuracy at each snapshot, against epochs so that tasks line up.

    ``runs`` maps a name to a :class:`ftgeo.finetune.FinetuneRun`.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check(smooth >= 1, f"smooth must be >= 1, got {smooth}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"training loss (mean of {smooth} steps)", "dev accuracy at each snapshot"))
    palette = {name: task_colour(list(runs), name) for name in runs}
    for name, run in runs.items():
        per_epoch = run.n_steps / run.settings.epochs
        loss = np.asarray(run.losses, dtype=float)
        k = min(smooth, len(loss))
        avg = np.convolve(loss, np.ones(k) / k, mode="valid")
        x = (np.arange(len(avg)) + k) / per_epoch
        fig.add_trace(go.Scatter(x=x, y=avg, mode="lines", name=name, legendgroup=name,
                                 line={"color": palette[name]},
                                 hovertemplate=f"{name}<br>epoch %{{x:.2f}}<br>loss %{{y:.3f}}"
                                               "<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=np.asarray(run.steps) / per_epoch, y=run.dev_accuracy,
                                 mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=False, line={"color": palette[name]},
                                 customdata=np.asarray(run.steps),
                                 hovertemplate=f"{name}<br>step %{{customdata}} (epoch %{{x:.1f}})"
                                               "<br>dev accuracy %{y:.3f}<extra></extra>"),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=2)
    fig.update_layout(template="simple_white", height=420)
    return fig


def comparison_figure(table, *, title: str = "Models side by side"):
    """Grouped bars of :func:`ftgeo.compare.comparison_table`: one menu entry per measure,
    tasks on the x axis, one colour per model; solid bars after fine-tuning, pale bars
    before (where the measure has a before). Values on hover; works with no kernel."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    check(len(table) > 0, "table is empty: no chapter has run for any model")
    measures = list(dict.fromkeys(table["measure"]))
    models = sorted(set(table["model"]))
    palette = qualitative.Safe
    fig, owner = go.Figure(), []
    for m_index, measure in enumerate(measures):
        rows = table[table["measure"] == measure]
        tasks = list(dict.fromkeys(rows["task"]))
        for k, model in enumerate(models):
            sub = rows[rows["model"] == model].set_index("task").reindex(tasks)
            colour = palette[k % len(palette)]
            for state, opacity in (("before", 0.35), ("after", 1.0)):
                if sub[state].isna().all():
                    continue
                label = "finetuned" if state == "after" else "pretrained"
                fig.add_trace(go.Bar(
                    x=tasks, y=sub[state], name=f"{model}: {label}", marker_color=colour,
                    opacity=opacity, visible=m_index == 0, offsetgroup=f"{model}-{state}",
                    hovertemplate=f"{model}, {label}<br>%{{x}}: %{{y:.3f}}<extra>{measure}</extra>"))
                owner.append(m_index)
    fig.update_layout(
        title=f"{title}: {measures[0]}", barmode="group", template="simple_white", height=480,
        yaxis={"title": measures[0]}, xaxis={"title": "task", "type": "category"},
        updatemenus=_menu(measures, owner, title, y=1.18, relayout=lambda measure: {
            "title.text": f"{title}: {measure}", "yaxis.title.text": measure}),
        legend={"orientation": "h", "y": -0.2})
    return fig


def comparison_grid(table):
    """Static version of :func:`comparison_figure` for print: one panel per measure, bars
    after fine-tuning per task and model, a black tick at the value before ("pretrained")."""
    import matplotlib.pyplot as plt

    check(len(table) > 0, "table is empty: no chapter has run for any model")
    measures = list(dict.fromkeys(table["measure"]))
    models = sorted(set(table["model"]))
    n_cols = min(3, len(measures))
    n_rows = -(-len(measures) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.1 * n_rows), squeeze=False)
    width = 0.8 / len(models)
    colours = plt.get_cmap("tab10")
    for ax, measure in zip(axes.flat, measures, strict=False):
        rows = table[table["measure"] == measure]
        tasks = list(dict.fromkeys(rows["task"]))
        xs = np.arange(len(tasks))
        with_before = [k for k, model in enumerate(models)
                       if rows.loc[rows["model"] == model, "before"].notna().any()]
        first_before = with_before[0] if with_before else None
        for k, model in enumerate(models):
            sub = rows[rows["model"] == model].set_index("task").reindex(tasks)
            pos = xs - 0.4 + (k + 0.5) * width
            ax.bar(pos, sub["after"], width, color=colours(k), label=model)
            ax.scatter(pos, sub["before"], marker="_", s=120, color="k", zorder=3,
                       label="pretrained" if k == first_before else None)
        ax.set_xticks(xs, tasks, rotation=30, fontsize=8)
        ax.set_title(measure, fontsize=9)
    for ax in axes.flat[len(measures):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:len(measures)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
               fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def pca3d_menu(views: Mapping[str, PCAView], *, layer: int = -1, title: str = ""):
    """Label clusters in 3-D: a plotly scatter of one layer of each :class:`PCAView` (made
    with ``n_components=3``), one menu entry per view (e.g. "pos: pretrained"). Drag to turn,
    hover for the label, click the legend to hide a label; works with no kernel."""
    import plotly.graph_objects as go

    check(len(views) >= 1, "views is empty")
    fig, owner, names = go.Figure(), [], list(views)
    for i, name in enumerate(names):
        view = views[name]
        check(view.coords.shape[2] >= 3, f"view {name!r} has {view.coords.shape[2]} components; "
                                         "make it with pca_view(..., n_components=3)")
        colors = label_colors(view.shown)
        order = [*view.shown, OTHER] if OTHER in set(view.labels) else list(view.shown)
        P = view.coords[layer]
        for lab in order:
            mask = view.labels == lab
            fig.add_trace(go.Scatter3d(
                x=P[mask, 0], y=P[mask, 1], z=P[mask, 2], mode="markers", name=lab,
                marker={"color": colors[lab], "size": 2.5, "opacity": 0.8}, visible=i == 0,
                hovertemplate=f"{lab}<extra>{name}</extra>"))
            owner.append(i)
    fig.update_layout(
        title=f"{title} - {names[0]}" if title else names[0], template="simple_white", height=560,
        scene={"xaxis_title": "PC1", "yaxis_title": "PC2", "zaxis_title": "PC3"},
        updatemenus=_menu(names, owner, title), legend={"itemsizing": "constant"},
        margin={"l": 0, "r": 0, "b": 0})
    return fig


def menu_figure(panels: Mapping[str, Mapping[str, tuple]], *, title: str = "",
                xaxis_title: str = "", yaxis_title: str = "", mode: str = "lines+markers",
                log_y: bool = False, diagonal: bool = False):
    """Named traces grouped into panels, one menu entry per panel; values on hover.

    panels : {panel name: {trace name: (x, y) or (x, y, hover texts)}}; a trace named after a
        model state ("pretrained", "finetuned") is drawn in its :data:`STATE_STYLE`
    diagonal : draw y = x in every panel (for before/after scatters)
    """
    import plotly.graph_objects as go

    check(len(panels) >= 1, "panels is empty")
    fig, owner, names = go.Figure(), [], list(panels)
    for i, name in enumerate(names):
        lows, highs = [], []
        for trace, values in panels[name].items():
            x, y = np.asarray(values[0]), np.asarray(values[1], dtype=float)
            text = values[2] if len(values) > 2 else None
            style = STATE_STYLE.get(trace)
            look = {} if style is None else {
                "line": {"color": style["color"], "dash": _PLOTLY_DASH[style["ls"]]},
                "marker": {"color": style["color"]}}
            fig.add_trace(go.Scatter(
                x=x, y=y, mode=mode, name=trace, text=text, visible=i == 0, **look,
                hovertemplate=(("%{text}<br>" if text is not None else "")
                               + f"{xaxis_title or 'x'} %{{x}}<br>{yaxis_title or 'y'} %{{y:.3f}}"
                               + f"<extra>{trace}</extra>")))
            owner.append(i)
            if diagonal and np.isfinite(x.astype(float)).any() and np.isfinite(y).any():
                lows.append(min(np.nanmin(x.astype(float)), np.nanmin(y)))
                highs.append(max(np.nanmax(x.astype(float)), np.nanmax(y)))
        if diagonal and lows:
            fig.add_trace(go.Scatter(x=[min(lows), max(highs)], y=[min(lows), max(highs)],
                                     mode="lines", line={"dash": "dash", "color": "black", "width": 1},
                                     name="no change", hoverinfo="skip", visible=i == 0))
            owner.append(i)
    fig.update_layout(
        title=f"{title} - {names[0]}" if title else names[0], template="simple_white", height=480,
        xaxis_title=xaxis_title, yaxis={"title": yaxis_title, "type": "log" if log_y else "linear"},
        updatemenus=_menu(names, owner, title))
    return fig


VERDICT_COLOURS = {"holds": "#1b9e77", "does not hold": "#d95f02", "not testable here": "#bbbbbb"}


def claims_figure(claims, *, title: str = "Claims by paper and verdict"):
    """Stacked bars of a scorecard (:func:`ftgeo.claims.scorecard`: a DataFrame with ``paper``,
    ``section``, ``claim`` and ``verdict`` columns): one bar per paper; hover a segment to read
    its claims."""
    import textwrap

    import plotly.graph_objects as go

    check(len(claims) > 0, "claims is empty")
    sources = list(dict.fromkeys(claims["paper"]))
    fig = go.Figure()
    for verdict, colour in VERDICT_COLOURS.items():
        counts, texts = [], []
        for source in sources:
            rows = claims[(claims["paper"] == source) & (claims["verdict"] == verdict)]
            counts.append(len(rows))
            texts.append("<br>".join("<br>   ".join(textwrap.wrap(f"{r.section}: {r.claim}", 90))
                                     for r in rows.itertuples()) or "none")
        fig.add_trace(go.Bar(x=sources, y=counts, name=verdict, marker_color=colour,
                             customdata=texts,
                             hovertemplate=f"<b>{verdict}</b>: %{{y}}<br>%{{customdata}}<extra></extra>"))
    fig.update_layout(barmode="stack", title=title, template="simple_white", height=420,
                      yaxis_title="claims", hoverlabel={"align": "left"})
    return fig


def explorer(views: Mapping[tuple[str, str], PCAView], *, title: str = ""):
    """An ipywidgets explorer of label clusters: pick the model state, task, layer and a label
    to highlight, and the 2-D PCA scatter below redraws (live in Jupyter; the book shows the
    state it was saved in).

    views : {(state, task): PCAView over the layers}, e.g. states "pretrained" and "finetuned"
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    check(len(views) >= 1, "views is empty")
    states = list(dict.fromkeys(s for s, _ in views))
    tasks = list(dict.fromkeys(t for _, t in views))
    n_layers = max(v.coords.shape[0] for v in views.values())
    state = widgets.Dropdown(options=states, value=states[-1], description="state")
    task = widgets.Dropdown(options=tasks, value=tasks[0], description="task")
    layer = widgets.IntSlider(min=0, max=n_layers - 1, value=n_layers - 1, description="layer")
    label = widgets.Dropdown(description="label")
    out = widgets.Output()

    def labels_of(key):
        return ["(all)", *views[key].shown] if key in views else ["(all)"]

    def draw(*_):
        key = (state.value, task.value)
        with out:
            out.clear_output(wait=True)
            if key not in views:
                print(f"no view for {key}")
                return
            view = views[key]
            k = min(layer.value, view.coords.shape[0] - 1)
            colors = label_colors(view.shown)
            fig, ax = plt.subplots(figsize=(6, 4.4))
            for lab in [*view.shown, OTHER]:
                mask = view.labels == lab
                faded = label.value not in ("(all)", lab)
                ax.scatter(view.coords[k, mask, 0], view.coords[k, mask, 1], s=7,
                           color=GREY if faded else colors[lab], alpha=0.25 if faded else 0.85,
                           label=lab if mask.any() else None, zorder=1 if faded else 2)
            ev = view.explained[k]
            ax.set(xlabel=f"PC1 ({ev[0]:.0%})", ylabel=f"PC2 ({ev[1]:.0%})",
                   title=f"{title + ': ' if title else ''}{task.value}, {state.value}, layer {k}")
            ax.legend(fontsize=7, markerscale=2, frameon=False, loc="center left",
                      bbox_to_anchor=(1, 0.5))
            fig.tight_layout()
            plt.show()

    def new_task(*_):
        options = labels_of((state.value, task.value))
        label.options = options
        label.value = options[0]
        draw()

    label.options = labels_of((state.value, task.value))
    label.value = label.options[0]
    for w in (state, task):
        w.observe(new_task, names="value")
    for w in (layer, label):
        w.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([state, task]), widgets.HBox([layer, label]), out])


# ---------------------------------------------------------------------------------------------
# Chapters 8 (isotropy) and 9 (CKA): figures of an ftgeo.analyses study
# ---------------------------------------------------------------------------------------------

def isotropy_by_layer(study):
    """I(W), average cosine and IsoScore per layer (rows) and task (columns), pretrained
    dashed, finetuned solid; ``study``: an :class:`ftgeo.analyses.IsotropyStudy`."""
    import matplotlib.pyplot as plt

    tasks, m = study.tasks, study.measures
    panels = [("partition", "I(W)", True), ("average_cosine", "average cosine", False),
              ("isoscore", "IsoScore", False)]
    fig, axes = plt.subplots(len(panels), len(tasks), figsize=(2.3 * len(tasks), 6.4), sharex=True,
                             squeeze=False)
    for row, (column, label, log) in enumerate(panels):
        for ax, task in zip(axes[row], tasks, strict=True):
            for state in STATE_STYLE:
                part = m[(m["task"] == task) & (m["state"] == state)]
                ax.plot(part["layer"], part[column], label=state, **state_line(state, ms=3))
            if log:
                ax.set_yscale("log")
            ax.set_title(task if row == 0 else "")
            if task == tasks[0]:
                ax.set_ylabel(label)
            if row == len(panels) - 1:
                ax.set_xlabel("layer")
    axes[0, -1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def local_structure(study):
    """Last layer: global against within-cluster IsoScore per task (bars), and how strongly
    each top principal direction follows the surface property and the word (lines)."""
    import matplotlib.pyplot as plt

    tasks, last, content = study.tasks, study.last_layer(), study.last_content()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    width, x = 0.2, np.arange(len(tasks))
    bars = [(state, column, STATE_STYLE[state][shade]) for state in ("pretrained", "finetuned")
            for column, shade in (("isoscore", "light"), ("cluster isoscore", "color"))]
    for i, (state, column, colour) in enumerate(bars):
        axes[0].bar(x + (i - 1.5) * width, [last.loc[(t, state), column] for t in tasks], width, color=colour,
                    label=f"{state}, {'within clusters' if 'cluster' in column else 'global'}")
    axes[0].set(xticks=x, xticklabels=tasks, ylabel="IsoScore, last layer",
                title="Global and within-cluster isotropy")
    axes[0].legend(frameon=False, fontsize=7)
    axes[0].tick_params(axis="x", rotation=45)
    for ax, column, title in ((axes[1], "|r| by direction", "Top directions vs. frequency or length"),
                              (axes[2], "word share by direction", "Top directions vs. word identity")):
        for task in tasks:
            for state in STATE_STYLE:
                v = np.asarray(content.loc[(task, state), column], dtype=float)
                if np.isfinite(v).any():
                    ax.plot(np.arange(1, len(v) + 1), v, ls=STATE_STYLE[state]["ls"], marker=".",
                            color=task_colour(tasks, task), label=task if state == "finetuned" else None)
        ax.set(xlabel="principal direction (last layer)", title=title)
    axes[1].set_ylabel("|Pearson r| with the property")
    axes[2].set_ylabel("variance share explained by the word (eta²)")
    axes[2].legend(frameon=False, fontsize=7, title="solid: finetuned, dashed: pretrained", title_fontsize=7)
    fig.tight_layout()
    return fig


def elongated_directions(study, top: int = 50):
    """The cumulative share of variance of the last layer's top ``top`` directions, and the
    number of elongated directions per layer; pretrained dashed, finetuned solid."""
    import matplotlib.pyplot as plt

    tasks, m = study.tasks, study.measures
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for task in tasks:
        colour = task_colour(tasks, task)
        for state in STATE_STYLE:
            ls = STATE_STYLE[state]["ls"]
            s = study.last_shares(task, state)
            n = min(top, len(s))
            axes[0].plot(np.arange(1, n + 1), np.cumsum(s)[:n], ls=ls, color=colour,
                         label=task if state == "finetuned" else None)
            part = m[(m["task"] == task) & (m["state"] == state)]
            axes[1].plot(part["layer"], part["elongated"], ls=ls, marker=".", color=colour)
    axes[0].set(xlabel="top principal directions (last layer)", ylabel="cumulative share of variance",
                title="Variance held by the top directions")
    axes[1].set(xlabel="layer", ylabel="elongated directions",
                title="Directions with at least 10x an isotropic share")
    axes[0].legend(frameon=False, fontsize=7, title="solid: finetuned, dashed: pretrained", title_fontsize=7)
    fig.tight_layout()
    return fig


def variance_menu(study, top: int = 50):
    """Plotly: the cumulative share of variance of the last layer, one menu entry per task."""
    panels = {}
    for task in study.tasks:
        panels[task] = {}
        for state in STATE_STYLE:
            s = study.last_shares(task, state)
            n = min(top, len(s))
            panels[task][state] = (np.arange(1, n + 1), np.cumsum(s)[:n])
    return menu_figure(panels, title="Cumulative share of variance, last layer",
                       xaxis_title="top principal directions", yaxis_title="share of variance")


def removal_curves(study):
    """Probe accuracy at the last layer against the number D of top (solid) or random (dotted)
    directions removed, per task; the thin line is the accuracy with nothing removed."""
    import matplotlib.pyplot as plt

    tasks, curves, base = study.tasks, study.curves, study.probes_last()
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks), 2.9), sharex=True, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for state in STATE_STYLE:
            colour = STATE_STYLE[state]["color"]
            for name, ls in (("top D removed", "-"), ("random D removed", ":")):
                part = curves[(curves["task"] == task) & (curves["state"] == state)
                              & (curves["variant"] == name)]
                ax.plot(part["D"], part["accuracy"], ls=ls, marker=".", color=colour,
                        label=f"{state}, {name.split()[0]}")
            none = base[(base["task"] == task) & (base["state"] == state) & (base["variant"] == "none")]
            ax.axhline(float(none["accuracy"].iloc[0]), color=colour, lw=0.6)
        ax.set(xscale="log", title=task, xlabel="D removed")
    axes[0, 0].set_ylabel("probe test accuracy, last layer")
    axes[0, -1].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return fig


def enhancement_by_layer(study):
    """Per layer and task, the change of the standardized ridge probe's accuracy from global
    (dots) and per-cluster (crosses) removal of the top D directions: what removing them costs
    a probe retrained on what is left (the paper's evaluation: :func:`enhancement_methods`)."""
    import matplotlib.pyplot as plt

    tasks = study.tasks
    gain = study.probes.pivot_table(index=["task", "state", "layer"], columns="variant", values="accuracy")
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks), 2.9), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for state in STATE_STYLE:
            colour = STATE_STYLE[state]["color"]
            part = gain.loc[(task, state)]
            ax.plot(part.index, part["top D removed"] - part["none"], color=colour, marker=".",
                    label=f"{state}, global")
            ax.plot(part.index, part["per cluster"] - part["none"], color=colour, marker="x", ls="--",
                    label=f"{state}, per cluster")
        ax.axhline(0, color="k", lw=0.6)
        ax.set(title=task, xlabel="layer")
    axes[0, 0].set_ylabel("accuracy change from enhancement")
    axes[0, -1].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return fig


def enhancement_methods(table):
    """Per task, the change of the enhancement classifier's test accuracy from each of the
    paper's four isotropy enhancements (x axis), pretrained and fine-tuned (one marker per
    fine-tuning seed); ``table``: :func:`ftgeo.analyses.enhancement_table`."""
    import matplotlib.pyplot as plt

    check(len(table) > 0, "table is empty: the study ran without the enhancement evaluation")
    tasks = list(dict.fromkeys(table["task"]))
    methods = [m for m in dict.fromkeys(table["method"]) if m != "none"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.4 * len(tasks), 3.2), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for offset, state in zip((-0.15, 0.15), STATE_STYLE, strict=True):
            part = table[(table["task"] == task) & (table["state"] == state) & (table["method"] != "none")]
            x = np.array([methods.index(m) for m in part["method"]]) + offset
            ax.plot(x, part["gain"], **state_line(state, ls="none", ms=4, alpha=0.8), label=state)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.set_title(task)
    axes[0, 0].set_ylabel("accuracy change from enhancement")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    keep = dict(zip(labels, handles, strict=True))  # one entry per state, not per marker
    axes[0, -1].legend(keep.values(), keep.keys(), frameon=False, fontsize=6)
    fig.tight_layout()
    return fig


def cka_heatmaps(study):
    """CKA between layers per task (columns): pretrained, finetuned (blocks found outlined)
    and their difference (rows); ``study``: an :class:`ftgeo.analyses.CKAStudy`."""
    import matplotlib.pyplot as plt

    tasks = study.tasks
    fig, axes = plt.subplots(3, len(tasks), figsize=(2.3 * len(tasks), 7.2), squeeze=False)
    images = {}
    for col, task in enumerate(tasks):
        m, ids = study.matrices[task], study.layers[task]
        panels = [("pretrained", m["pretrained"], "viridis", (0, 1)),
                  ("finetuned", m["finetuned"], "viridis", (0, 1)),
                  ("finetuned - pretrained", m["finetuned"] - m["pretrained"], "RdBu_r", (-0.5, 0.5))]
        for row, (name, M, cmap, (lo, hi)) in enumerate(panels):
            ax = axes[row, col]
            images[row] = ax.imshow(M, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_xticks(range(len(ids)), ids, fontsize=7)
            ax.set_yticks(range(len(ids)), ids, fontsize=7)
            ax.set_title(task if row == 0 else "")
            if col == 0:
                ax.set_ylabel(name)
            if name == "finetuned":
                for a, b in study.blocks[task, "finetuned"].blocks:  # outline the blocks found
                    i, j = ids.index(a), ids.index(b)
                    ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), j - i + 1, j - i + 1, fill=False,
                                               ec="w", lw=1.5))
    fig.colorbar(images[0], ax=axes[:2].ravel().tolist(), shrink=0.5, label="CKA")
    fig.colorbar(images[2], ax=axes[2].tolist(), shrink=0.9, label="difference")
    return fig


def layers_and_dropping(study):
    """Per task: each layer's CKA with itself before and after fine-tuning, and test accuracy
    with the top k layers dropped."""
    import matplotlib.pyplot as plt

    same, dropping = study.same_layer(), study.dropping
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for task in study.tasks:
        colour = task_colour(study.tasks, task)
        axes[0].plot(same.columns, same.loc[task], marker="o", ms=3, color=colour, label=task)
        axes[1].plot(dropping.columns, dropping.loc[task], marker="o", ms=3, color=colour, label=task)
    axes[0].set(xlabel="layer", ylabel="CKA, pretrained vs. finetuned", title="How much each layer changed",
                ylim=(0, 1.02))
    axes[1].set(xlabel="top layers dropped (no further tuning)", ylabel="test accuracy",
                title="Dropping the top layers")
    axes[1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


# -- chapters 05 and 07: spatial structure along fine-tuning and across layers ---------------
def _over_seeds(frames: Sequence[object]):
    """The mean, lowest and highest of DataFrames of one shape (one per fine-tuning seed),
    NaN-aware, aligned on the first's index and columns: three DataFrames."""
    import warnings

    import pandas as pd

    first = frames[0]
    stack = np.stack([np.asarray(f.reindex(index=first.index, columns=first.columns), dtype=float)
                      for f in frames])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell no seed defines stays NaN
        out = (np.nanmean(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0))
    return tuple(pd.DataFrame(a, index=first.index, columns=first.columns) for a in out)


def _band(ax, x, low, high, colour) -> None:
    """Shade the range between ``low`` and ``high`` (the seeds' extremes) in ``colour``."""
    ax.fill_between(np.asarray(x, dtype=float), np.asarray(low, dtype=float),
                    np.asarray(high, dtype=float), color=colour, alpha=0.2, lw=0)


def min_distance_extremes(min_distance: Mapping[str, object], n_steps: Mapping[str, int], *,
                          n_extreme: int = 3, seeds: Sequence[Mapping[str, object]] | None = None):
    """One panel per task: the ``n_extreme`` labels whose minimum distance grew most (solid)
    and least (dashed) along fine-tuning, against the fraction of training.

    min_distance : {task: pandas DataFrame of steps x labels}
        (:meth:`ftgeo.spatial.Trajectory.min_distance_table`)
    n_steps : {task: the run's number of training steps}
    seeds : one such mapping per fine-tuning seed, the first seed's being ``min_distance``:
        each line is then the mean over seeds (the labels chosen by it) and a band spans the
        seeds' lowest to highest value
    """
    import matplotlib.pyplot as plt

    from .spatial import growth

    check(len(min_distance) >= 1, "min_distance is empty")
    check(n_extreme >= 1, f"n_extreme must be >= 1, got {n_extreme}")
    several = seeds is not None and len(seeds) > 1
    n = len(min_distance)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.0), squeeze=False)
    for ax, (task, d) in zip(axes[0], min_distance.items(), strict=True):
        low = high = None
        if several:
            d, low, high = _over_seeds([s[task] for s in seeds])
        g = growth(d)
        x = d.index.to_numpy() / n_steps[task]
        for sign, ls, labels in (("+", "-", g.index[:n_extreme]), ("-", "--", g.index[-n_extreme:])):
            for lab in labels:
                (line,) = ax.plot(x, d[lab], ls, marker=".", label=f"{lab} ({sign})")
                if several:
                    _band(ax, x, low[lab], high[lab], line.get_color())
        ax.set(title=task, xlabel="fraction of training")
        ax.legend(frameon=False, fontsize=6)
    axes[0, 0].set(ylabel="minimum distance to another label"
                   + (f"\n(mean and range over {len(seeds)} seeds)" if several else ""))
    fig.tight_layout()
    return fig


def centroid_paths_figure(paths: Mapping[str, object], *, title: str = ""):
    """One plotly panel per task: the path of each label's centroid along fine-tuning in 2-D
    (:meth:`ftgeo.spatial.Trajectory.centroid_paths`); a circle marks the first step, a star
    the last; hover for the label and step.

    paths : {task: :class:`ftgeo.spatial.CentroidPaths`, or a list of them, one per
        fine-tuning seed on shared axes (:func:`ftgeo.spatial.centroid_paths`)}: the first
        seed's path is drawn solid, the others dotted in the same colour
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check(len(paths) >= 1, "paths is empty")
    tasks = list(paths)
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=tasks, horizontal_spacing=0.04)
    for col, task in enumerate(tasks, start=1):
        every = [paths[task]] if hasattr(paths[task], "coords") else list(paths[task])
        for seed, p in enumerate(every):
            n = len(p.steps)
            colors = label_colors(list(p.labels))
            sizes, symbols = [5] * n, ["circle"] * n
            sizes[0], sizes[-1], symbols[-1] = 10, 14, "star"
            name = "" if len(every) == 1 else f", seed {seed}"
            for k, lab in enumerate(p.labels):
                fig.add_trace(go.Scatter(x=p.coords[:, k, 0], y=p.coords[:, k, 1], mode="lines+markers",
                                         name=f"{task}: {lab}{name}", legendgroup=f"{task}: {lab}",
                                         line={"color": colors[lab], "dash": "solid" if seed == 0 else "dot"},
                                         customdata=np.asarray(p.steps),
                                         marker={"size": sizes, "symbol": symbols},
                                         hovertemplate=f"{lab}<br>step %{{customdata}}{name}"
                                                       f"<extra>{task}</extra>"),
                              row=1, col=col)
    fig.update_layout(template="simple_white", height=400, title=title)
    return fig


def displacement_menu(points: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]], *,
                      title: str = "centroid displacement"):
    """Labels as points in 2-D with a menu over tasks and a slider over layers (works with no
    kernel); the axes of a task are the same at every layer and centred on the origin.

    points : {task: ndarray of shape (n_layers, n_labels, 2)}, e.g.
        :meth:`ftgeo.spatial.CentroidMotion.pca`
    labels : {task: the name of each label (row)}
    """
    import plotly.graph_objects as go

    check(len(points) >= 1, "points is empty")
    tasks = list(points)
    fig, trace_of, lims = go.Figure(), {}, {}
    for task in tasks:
        P = np.asarray(points[task])
        check(P.ndim == 3 and P.shape[2] >= 2 and P.shape[1] == len(labels[task]),
              f"points[{task!r}] must have shape (n_layers, {len(labels[task])}, 2), got {P.shape}")
        names = list(labels[task])
        lims[task] = float(np.abs(P[..., :2]).max()) * 1.15 + 1e-9
        for k in range(len(P)):
            trace_of[task, k] = len(fig.data)
            fig.add_trace(go.Scatter(
                x=P[k, :, 0], y=P[k, :, 1], mode="markers+text", text=names,
                textposition="top center", textfont={"size": 8},
                marker={"size": 6, "color": "#0173b2"}, name=f"{task} layer {k}",
                visible=(task == tasks[0] and k == len(P) - 1),
                hovertemplate="%{text}<br>%{x:.2f}, %{y:.2f}<extra>" + f"{task}, layer {k}</extra>"))
    n_traces = len(fig.data)
    n_layers = {task: len(points[task]) for task in tasks}

    def slider(task):
        steps = [{"label": str(k), "method": "update",
                  "args": [{"visible": [i == trace_of[task, k] for i in range(n_traces)]}]}
                 for k in range(n_layers[task])]
        return {"active": n_layers[task] - 1, "steps": steps, "currentvalue": {"prefix": "layer "}}

    def axes(task):
        return {"xaxis.range": [-lims[task], lims[task]], "yaxis.range": [-lims[task], lims[task]]}

    buttons = [{"label": task, "method": "update",
                "args": [{"visible": [i == trace_of[task, n_layers[task] - 1] for i in range(n_traces)]},
                         {"sliders": [slider(task)], "title.text": f"{task}: {title}", **axes(task)}]}
               for task in tasks]
    fig.update_layout(updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.15, "xanchor": "right"}],
                      sliders=[slider(tasks[0])], title=f"{tasks[0]}: {title}",
                      template="simple_white", height=520, xaxis_title="PC1 of displacement",
                      yaxis_title="PC2 of displacement", showlegend=False)
    fig.update_xaxes(range=[-lims[tasks[0]], lims[tasks[0]]])
    fig.update_yaxes(range=[-lims[tasks[0]], lims[tasks[0]]])
    return fig


def similarity_by_layer(similarity: Mapping[str, object], n_steps: Mapping[str, int], *,
                        threshold: float = 0.5, seeds: Sequence[Mapping[str, object]] | None = None):
    """One panel per task: each layer's spatial similarity to the pretrained model against the
    fraction of training (a dotted line at ``threshold``); layers with a missing value are
    left out.

    similarity : {task: pandas DataFrame of layers x steps}
        (:func:`ftgeo.spatial.similarity_to_pretrained`)
    n_steps : {task: the run's number of training steps}
    seeds : one such mapping per fine-tuning seed, the first seed's being ``similarity``: each
        line is then the mean over the seeds where it is defined, and a band spans the seeds'
        lowest to highest value
    """
    import matplotlib.pyplot as plt

    check(len(similarity) >= 1, "similarity is empty")
    several = seeds is not None and len(seeds) > 1
    n = len(similarity)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.9), sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (task, s) in zip(axes[0], similarity.items(), strict=True):
        low = high = None
        if several:
            s, low, high = _over_seeds([x[task] for x in seeds])
        x = np.asarray(s.columns) / n_steps[task]
        for k in s.index[s.notna().all(axis=1)]:
            colour = cmap(k / max(len(s) - 1, 1))
            ax.plot(x, s.loc[k], color=colour, marker=".", label=f"layer {k}")
            if several:
                _band(ax, x, low.loc[k], high.loc[k], colour)
        ax.axhline(threshold, color="k", lw=0.6, ls=":")
        ax.set(title=task, xlabel="fraction of training")
    axes[0, 0].set(ylabel="spatial similarity to pretrained"
                   + (f"\n(mean and range over {len(seeds)} seeds)" if several else ""))
    axes[0, -1].legend(frameon=False, fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig


def motion_by_layer(motion: Mapping[str, object], *, seeds: Sequence[Mapping[str, object]] | None = None):
    """Two panels: the relative range of motion and the relative mean motion of label
    centroids per layer, one line per task.

    motion : {task: pandas DataFrame with one row per layer}
        (:meth:`ftgeo.spatial.CentroidMotion.table`)
    seeds : one such mapping per fine-tuning seed, the first seed's being ``motion``: each
        line is then the mean over seeds, and a band spans the seeds' lowest to highest value
    """
    import matplotlib.pyplot as plt

    check(len(motion) >= 1, "motion is empty")
    several = seeds is not None and len(seeds) > 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    tasks = list(motion)
    for task, m in motion.items():
        colour = task_colour(tasks, task)
        low = high = None
        if several:
            m, low, high = _over_seeds([x[task] for x in seeds])
        for ax, column in zip(axes, ("relative range", "relative mean motion"), strict=True):
            ax.plot(m.index, m[column], marker=".", color=colour, label=task)
            if several:
                _band(ax, m.index, low[column], high[column], colour)
    over = f" (mean and range over {len(seeds)} seeds)" if several else ""
    axes[0].set(xlabel="layer", ylabel="(max - min) / mean centroid distance",
                title="Relative range of motion" + over)
    axes[1].set(xlabel="layer", ylabel="mean displacement / mean centroid distance",
                title="Relative motion" + over)
    axes[1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def cross_task_scatter(seeds: Sequence[Mapping[str, object]], *, target: str = "",
                       pretrained: str = "pretrained"):
    """One panel per fine-tuned state (matplotlib): each target label's minimum distance in
    the pretrained state against that after fine-tuning, one colour per fine-tuning seed,
    with the line of no change.

    seeds : one {state: :class:`ftgeo.spatial.ProbedState`} per fine-tuning seed, the first
        seed's first and holding the ``pretrained`` state too
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    check(len(seeds) >= 1 and pretrained in seeds[0],
          f"seeds: the first seed's states must include {pretrained!r}")
    names = [n for n in seeds[0] if n != pretrained]
    check(len(names) >= 1, "seeds: no fine-tuned state")
    base = pd.Series(seeds[0][pretrained].clusters.min_distances(), dtype=float)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names, strict=True):
        top = base.max()  # NaN, silently, where no label has a distance
        for k, s in enumerate(seeds):
            after = pd.Series(s[name].clusters.min_distances(), dtype=float).reindex(base.index)
            ax.scatter(base.to_numpy(), after.to_numpy(), s=12, color=colours(k % 10), alpha=0.8,
                       label=f"seed {k}")
            top = np.fmax(top, after.max())
        lim = [0, top * 1.05]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(title=name, xlabel="minimum distance, pretrained")
    axes[0, 0].set(ylabel="minimum distance after fine-tuning")
    if len(seeds) > 1:
        axes[0, -1].legend(frameon=False, fontsize=7, title="fine-tuning", title_fontsize=7)
    fig.suptitle(f"{target} labels: minimum distance before and after fine-tuning on each task".strip(),
                 fontsize=10)
    fig.tight_layout()
    return fig


def cross_task_menu(seeds: Sequence[Mapping[str, object]], labels: Sequence[str], *, target: str = "",
                    pretrained: str = "pretrained"):
    """The data of :func:`cross_task_scatter` as a plotly menu, one entry per fine-tuned state
    and one trace per fine-tuning seed; hover for the label.

    seeds : as for :func:`cross_task_scatter`
    labels : the target task's label names, indexed by label code
    """
    import pandas as pd

    check(len(seeds) >= 1 and pretrained in seeds[0],
          f"seeds: the first seed's states must include {pretrained!r}")
    base = pd.Series(seeds[0][pretrained].clusters.min_distances(), dtype=float)
    names = [labels[k] for k in base.index]
    panels = {name: {f"seed {k}": (base.to_numpy(), pd.Series(s[name].clusters.min_distances(), dtype=float)
                                   .reindex(base.index).to_numpy(), names)
                     for k, s in enumerate(seeds)}
              for name in seeds[0] if name != pretrained}
    return menu_figure(panels, title=f"{target}: minimum distance".lstrip(": "), xaxis_title="pretrained",
                       yaxis_title="after fine-tuning", mode="markers", diagonal=True)


# -- chapters 02, 03 and 04: before and after fine-tuning, per task -------------------------
def dev_accuracy_figure(runs: Mapping[str, object]):
    """The dev accuracy of fine-tuning runs at each snapshot against epochs, one line per run
    (matplotlib); ``runs`` maps a name to a :class:`ftgeo.finetune.FinetuneRun`."""
    import matplotlib.pyplot as plt

    check(len(runs) >= 1, "runs is empty")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, run in runs.items():
        ax.plot(np.asarray(run.steps) / (run.n_steps / run.settings.epochs), run.dev_accuracy,
                marker="o", color=task_colour(list(runs), name), label=name)
    ax.set(xlabel="epoch", ylabel="dev accuracy", ylim=(0, 1), title="Dev accuracy at each snapshot")
    ax.legend(frameon=False, fontsize=8)
    return fig


def layer_curves(curves: Mapping[tuple[str, str], Sequence[float]], *, ylabel: str = "",
                 first_layer: int = 0, reference: float | None = None, sharey: bool = False,
                 styles: Mapping[str, str] | None = None):
    """One panel per task: a value per layer for each model state (matplotlib).

    curves : {(task, state): values at layers first_layer, first_layer + 1, ...}
    reference : draw a dotted horizontal line at this value in every panel
    styles : matplotlib format string per state, in place of its :data:`STATE_STYLE`
    """
    import matplotlib.pyplot as plt

    check(len(curves) >= 1, "curves is empty")
    styles = {} if styles is None else styles
    tasks = keyed_tasks(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3 * len(tasks), 2.8), sharey=sharey,
                             squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        layers = []
        for (t, state), values in curves.items():
            if t == task:
                layers = np.arange(first_layer, first_layer + len(values))
                if state in styles:
                    ax.plot(layers, values, styles[state], label=state)
                else:
                    ax.plot(layers, values, label=state, **state_line(state))
        if reference is not None:
            ax.axhline(reference, color="k", lw=0.8, ls=":")
        ax.set(title=task, xlabel="layer", xticks=layers)
    axes[0, 0].set(ylabel=ylabel)
    axes[0, 0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def state_bars(values: Mapping[tuple[str, str], float], *,
               errors: Mapping[tuple[str, str], float] | None = None, ylabel: str = "",
               title: str = "", ylim: tuple[float, float] | None = None,
               reference: float | None = None, ax=None):
    """Bars per task, one per model state in its :data:`STATE_STYLE` colour, with error bars
    from ``errors`` and a dashed line at ``reference`` if given; draws into ``ax`` if given
    (matplotlib) and returns the figure.

    values, errors : {(task, state): value}
    """
    import matplotlib.pyplot as plt

    check(len(values) >= 1, "values is empty")
    fig, ax = plt.subplots(figsize=(6, 3.2)) if ax is None else (ax.figure, ax)
    tasks = keyed_tasks(values)
    xs = np.arange(len(tasks))
    states = [s for s in STATE_STYLE if any(k[1] == s for k in values)]
    for k, state in enumerate(states):
        yerr = None if errors is None else [errors[t, state] for t in tasks]
        ax.bar(xs + (k - (len(states) - 1) / 2) * 0.4, [values[t, state] for t in tasks], 0.4,
               yerr=yerr, capsize=3 if yerr is not None else 0,
               color=STATE_STYLE[state]["color"], label=state)
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8, ls="--")
    ax.set(xticks=xs, xticklabels=tasks, ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(ylim)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def probe_similarity_figure(mlp: Mapping[tuple[str, str], object],
                            similarity: Mapping[tuple[str, str], float], *,
                            seeds: Sequence[Mapping[tuple[str, str], object]] | None = None,
                            similarity_seeds: Sequence[Mapping[tuple[str, str], float]] | None = None):
    """Two panels (matplotlib): the MLP probe's test accuracy per task before and after
    fine-tuning, and the train-test spatial similarity.

    mlp : {(task, state): :class:`ftgeo.probes.ProbeGridResult`}
    similarity : {(task, state): Pearson r}
    seeds, similarity_seeds : one such mapping per fine-tuning seed (the first seed's being
        ``mlp`` and ``similarity``): the fine-tuned bar is then the mean and sd over
        fine-tuning seeds (each the mean over probe seeds), every seed's similarity a dot and
        the line their mean; None: one seed, the bars' sd over probe seeds
    """
    import matplotlib.pyplot as plt

    from .probes import probing_table

    check(len(mlp) >= 1, "mlp is empty")
    tasks = keyed_tasks(mlp)
    # the fine-tuned bars and similarity line are the table's figures, seeds and all
    table = probing_table(mlp, similarity, seeds=seeds, similarity_seeds=similarity_seeds)
    means = {(t, state): table.loc[t, f"MLP {state}"] for t in tasks for state in STATE_STYLE}
    errors = {(t, state): table.loc[t, f"sd {state}"] for t in tasks for state in STATE_STYLE}
    several = seeds is not None and len(seeds) > 1
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    over = f"over {len(seeds)} fine-tuning seeds after" if several else "over probe seeds"
    state_bars(means, errors=errors, ylabel="MLP-probe test accuracy", ylim=(0, 1),
               title=f"Probe accuracy (mean and sd {over})", ax=ax1)
    xs = np.arange(len(tasks))
    for state in STATE_STYLE:
        ax2.plot(xs, [table.loc[t, f"similarity {state}"] for t in tasks], label=state, **state_line(state))
    if similarity_seeds is not None and len(similarity_seeds) > 1:
        for x, t in zip(xs, tasks, strict=True):
            dots = [np.nan if sim.get((t, "finetuned")) is None else sim[t, "finetuned"]
                    for sim in similarity_seeds]
            ax2.scatter([x] * len(dots), dots, s=10, color=state_line("finetuned").get("color"), alpha=0.6)
    ax2.set(xticks=xs, xticklabels=tasks, ylabel="Pearson r", title="Train-test spatial similarity")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def distance_scatter(clusters: Mapping[tuple[str, str, str], object],
                     labels: Mapping[str, Sequence[str]], *,
                     title: str = "Label-pair distances, train against test"):
    """One plotly panel per task: each pair of labels held by both the training and the test
    set, its distance on the training set against that on the test set, one colour per
    model state; hover for the pair.

    clusters : {(task, state, split): :class:`ftgeo.spatial.ClusterSummary`}, splits "train"
        and "test"
    labels : {task: the label names, indexed by label code}
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check(len(clusters) >= 1, "clusters is empty")
    tasks = keyed_tasks(clusters)
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=tasks, horizontal_spacing=0.04)
    for col, task in enumerate(tasks, start=1):
        names = np.asarray(labels[task])
        for state, style in STATE_STYLE.items():
            colour = style["color"]
            if (task, state, "train") not in clusters:
                continue
            tr, te = clusters[task, state, "train"], clusters[task, state, "test"]
            common = np.intersect1d(tr.classes, te.classes)
            i, j = np.triu_indices(len(common), 1)
            pairs = [f"{names[common[a]]} / {names[common[b]]}" for a, b in zip(i, j, strict=True)]
            fig.add_trace(go.Scattergl(
                x=tr.distance_vector(common), y=te.distance_vector(common), mode="markers",
                name=state, legendgroup=state, showlegend=(col == 1), text=pairs,
                marker={"color": colour, "size": 5, "opacity": 0.7},
                hovertemplate="%{text}<br>train %{x:.2f}<br>test %{y:.2f}<extra>" + state + "</extra>"),
                row=1, col=col)
    fig.update_xaxes(title_text="distance on train")
    fig.update_yaxes(title_text="distance on test", col=1)
    fig.update_layout(template="simple_white", height=380, title=title)
    return fig
