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

from ._util import check

OTHER = "other"
GREY = "#c8c8c8"


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
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.lineplot(data=long, x="layer", y="accuracy", hue="task", marker="o", ax=ax,
                 palette="colorblind")
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
    palette = label_colors(list(runs))
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
    after fine-tuning per task and model, a black tick at the value before."""
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
                       label="before fine-tuning" if k == first_before else None)
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
    with ``n_components=3``), one menu entry per view (e.g. "pos: untuned"). Drag to turn,
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

    panels : {panel name: {trace name: (x, y) or (x, y, hover texts)}}
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
            fig.add_trace(go.Scatter(
                x=x, y=y, mode=mode, name=trace, text=text, visible=i == 0,
                hovertemplate=(("%{text}<br>" if text is not None else "")
                               + f"{xaxis_title or 'x'} %{{x}}<br>{yaxis_title or 'y'} %{{y:.3f}}"
                               + f"<extra>{trace}</extra>")))
            owner.append(i)
            if diagonal and len(x):
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
