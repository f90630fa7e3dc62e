"""The dashboard's figures: plain functions from frames (app/queries.py) to plotly figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from app.queries import NOT_DRAWN, categories

COLOUR_BY = "param.mixing.block"  # MixMo's mixing block: linear, cut, ...
SIZE_BY = "param.model.n_members"  # M, the number of subnetworks
PRUNED_OPACITY = 0.5  # trials stopped early: their metrics are an earlier epoch's


def _short(column: str) -> str:
    return column.removeprefix("param.")


def tradeoff_figure(
    trials: pd.DataFrame,
    *,
    x: str,
    y: str,
    params: Sequence[str],
    front: Sequence[str] = (),
    selected: Sequence[str] = (),
) -> go.Figure:
    """Trials as points (colour: mixing block, size: M, symbol: status; trials stopped early
    faded, as their metrics are an earlier epoch's), the Pareto front `front` (run ids) as a
    line and the `selected` run ids ringed. Each point's customdata holds its run id, so a
    chart selection maps back to trials."""
    shown = trials[trials[x].notna() & trials[y].notna()]
    hover = list(dict.fromkeys([*params, *[c for c in (COLOUR_BY, SIZE_BY) if c in shown]]))
    frame = shown.rename(columns={c: _short(c) for c in hover})
    for column in (_short(c) for c in hover if c != SIZE_BY):  # not drawn: M = 1's block
        if frame[column].isna().any():
            frame[column] = frame[column].astype(object).fillna(NOT_DRAWN)
    colour = _short(COLOUR_BY) if COLOUR_BY in shown else None
    fig = px.scatter(
        frame,
        x=x,
        y=y,
        color=colour,
        color_discrete_sequence=px.colors.qualitative.D3,  # blocks keep their colour
        category_orders={colour: sorted(frame[colour].astype(str).unique())} if colour else {},
        size=_short(SIZE_BY) if SIZE_BY in shown else None,
        size_max=18,
        symbol="status",
        symbol_map={"finished": "circle", "pruned": "circle-open", "running": "diamond-open"},
        hover_name="trial_id",
        hover_data={**{_short(c): True for c in hover}, "status": True, "epochs": True},
        custom_data=["run_id"],
    )
    for trace in fig.data:
        if str(trace.name).split(", ")[-1] == "pruned":
            trace.update(opacity=PRUNED_OPACITY, legendgroup="pruned", marker_line_width=2)
    _label_overlaps(fig, shown, x, y)
    on_front = shown.set_index("run_id").reindex(list(front)).dropna(subset=[x, y])
    on_front = on_front.sort_values([x, y])
    fig.add_trace(
        go.Scatter(
            x=on_front[x],
            y=on_front[y],
            mode="lines+markers",
            name="Pareto front",
            line={"color": "black", "dash": "dash", "width": 1.5},
            marker={"color": "black", "size": 5},
            hoverinfo="skip",
        )
    )
    ringed = shown[shown["run_id"].isin(list(selected))]
    fig.add_trace(
        go.Scatter(
            x=ringed[x],
            y=ringed[y],
            mode="markers",
            name="selected",
            marker={"size": 26, "symbol": "circle-open", "color": "crimson", "line": {"width": 2}},
            customdata=ringed[["run_id"]].to_numpy(),
            hoverinfo="skip",
        )
    )
    fig.update_layout(dragmode="lasso", legend_title_text="", margin={"t": 30})
    return fig


def overlapping(trials: pd.DataFrame, x: str, y: str) -> int:
    """How many trials share their (x, y) point with another (one marker hides the others)."""
    shown = trials[trials[x].notna() & trials[y].notna()]
    sizes = shown.groupby([x, y], sort=False).size()
    return int(sizes[sizes > 1].sum())


def _label_overlaps(fig: go.Figure, trials: pd.DataFrame, x: str, y: str) -> None:
    """Label each point that several trials share with "×n"; its hover names them."""
    shown = trials[trials[x].notna() & trials[y].notna()]
    groups = shown.groupby([x, y], sort=False)["trial_id"].agg(list)
    shared = groups[groups.map(len) > 1]
    if shared.empty:
        return
    xs, ys = zip(*shared.index, strict=True)
    fig.add_trace(
        go.Scatter(
            x=list(xs), y=list(ys), mode="text", name="overlapping", showlegend=False,
            text=[f"×{len(ids)}" for ids in shared], textposition="top right",
            hovertext=[f"{len(ids)} trials here: {', '.join(ids)}" for ids in shared],
            hoverinfo="text",
        )
    )  # fmt: skip


def parallel_figure(
    trials: pd.DataFrame,
    params: Sequence[str],
    target: str,
    scales: Mapping[str, str] | None = None,
    axes: Mapping[str, Sequence[object]] | None = None,
) -> go.Figure:
    """Parallel coordinates: one axis per parameter, the last one `target` (also the colour).
    `scales` (`parameters.param_scales`) puts categorical params on axes of their values (`axes`,
    from `parameters.axis_categories`) and log params on log10 axes labelled in their own units
    (parcoords has no log axis)."""
    shown = trials[trials[target].notna()]
    dimensions = []
    for column in [*params, target]:
        values, scale = shown[column], (scales or {}).get(column)
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if scale == "categorical" or not numeric:
            labels = list((axes or {}).get(column) or categories(values))
            if values.isna().any():  # trials that did not draw it: an axis value of their own
                labels.append(NOT_DRAWN)
            codes = values.fillna(NOT_DRAWN).map({v: i for i, v in enumerate(labels)})
            dimensions.append(
                {"label": _short(column), "values": codes, "tickvals": list(range(len(labels))),
                 "ticktext": [_tick(v) for v in labels], "range": [0, max(len(labels) - 1, 1)]}
            )  # fmt: skip
        elif scale == "log":
            ticks = _log_ticks(float(values.min()), float(values.max()))
            dimensions.append(
                _with_missing(_short(column), np.log10(values), np.log10(ticks).tolist(),
                              [_tick(t) for t in ticks])
            )  # fmt: skip
        elif values.isna().any():
            ticks = np.linspace(float(values.min()), float(values.max()), 5).tolist()
            dimensions.append(
                _with_missing(_short(column), values, ticks, [f"{t:.3g}" for t in ticks])
            )
        else:
            dimensions.append({"label": _short(column), "values": values})
    line = {"color": shown[target], "colorscale": "Viridis", "showscale": True}
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    fig.update_layout(margin={"l": 60, "r": 60, "t": 50})
    return fig


def _with_missing(
    label: str, values: pd.Series, tickvals: list[float], ticktext: list[str]
) -> dict[str, object]:
    """A numeric parcoords axis whose missing values (not drawn) sit on a tick of their own,
    below the others (parcoords draws no line through a missing value)."""
    if not values.isna().any():
        return {"label": label, "values": values, "tickvals": tickvals, "ticktext": ticktext}
    low, high = min(tickvals), max(tickvals)
    below = low - 0.15 * ((high - low) or 1.0)
    return {"label": label, "values": values.fillna(below), "tickvals": [below, *tickvals],
            "ticktext": [NOT_DRAWN, *ticktext]}  # fmt: skip


def slice_figure(
    trials: pd.DataFrame,
    param: str,
    target: str,
    scale: str,
    order: Sequence[object] | None = None,
) -> go.Figure:
    """`target` against one parameter, a point per trial (symbol: status), on an axis of the
    parameter's `scale`: its values (in the `order` of `parameters.axis_categories`), log or
    linear."""
    categorical = scale == "categorical"
    shown = trials[trials[target].notna() & (categorical | trials[param].notna())]
    frame = shown.assign(**{_short(param): shown[param]})
    if categorical:  # trials that did not draw the param get a category of their own
        labels = [_tick(v) for v in (order or categories(shown[param]))]
        labels += [NOT_DRAWN] if shown[param].isna().any() else []
        frame[_short(param)] = shown[param].map(_tick, na_action="ignore").fillna(NOT_DRAWN)
    fig = px.scatter(
        frame, x=_short(param), y=target, symbol="status", hover_name="trial_id",
        symbol_map={"finished": "circle", "pruned": "circle-open", "running": "diamond-open"},
        hover_data={"epochs": True}, custom_data=["run_id"],
    )  # fmt: skip
    if scale == "categorical":
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    elif scale == "log":
        fig.update_xaxes(type="log")
    for trace in fig.data:
        if trace.name == "pruned":
            trace.update(opacity=PRUNED_OPACITY)
    _label_overlaps(fig, frame, _short(param), target)
    fig.update_layout(legend_title_text="", margin={"t": 30})
    return fig


def _tick(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks of each decade between `low` and `high`, ends included."""
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
    ]
    inside = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
    return sorted({low, *inside, high}) if len(inside) < 2 else inside


def importance_figure(importances: pd.DataFrame, target: str) -> go.Figure:
    """Horizontal bars of parameter importance for `target`, the most important on top."""
    frame = importances.assign(param=importances["param"].map(_short)).iloc[::-1]
    fig = px.bar(
        frame, x="importance", y="param", orientation="h", title=f"importance for {target}"
    )
    fig.update_layout(yaxis_title="", margin={"t": 40})
    return fig


def curves_figure(histories: pd.DataFrame, labels: Mapping[str, str], metric: str) -> go.Figure:
    """`metric` per epoch, one line per run, named by `labels` (run id -> trial id)."""
    frame = histories[histories["metric"] == metric].assign(
        trial=lambda f: f["run_id"].map(labels)
    )
    fig = px.line(frame, x="step", y="value", color="trial", markers=True)
    fig.update_layout(xaxis_title="epoch", yaxis_title=metric, margin={"t": 30})
    return fig


def members_figure(members: pd.DataFrame, split: str) -> go.Figure:
    """Grouped bars of each head's accuracy, per trial (from `queries.member_accuracies`)."""
    fig = px.bar(members, x="trial", y="acc", color="member", barmode="group")
    fig.update_layout(yaxis_title=f"{split} accuracy", margin={"t": 30})
    return fig


def calibration_figure(calibration: pd.DataFrame, split: str) -> go.Figure:
    """NLL and ECE before and after temperature scaling, per trial (`queries.calibration`)."""
    fig = px.bar(
        calibration, x="trial", y="value", color="scaling", barmode="group",
        facet_col="metric", facet_col_spacing=0.12,  # each panel keeps its own y ticks
    )  # fmt: skip
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1].upper()))
    fig.update_yaxes(matches=None, showticklabels=True, title="")
    fig.update_layout(
        title=f"{split} calibration", margin={"t": 60},
        legend={"orientation": "h", "y": -0.2, "title": "temperature scaling"},
    )  # fmt: skip
    return fig


def greedy_figure(path: pd.DataFrame, metric: str) -> go.Figure:
    """Validation and test `metric` of the greedy ensemble as it grows."""
    long = path.melt(id_vars="size", value_vars=[f"val/{metric}", f"test/{metric}"])
    fig = px.line(long, x="size", y="value", color="variable", markers=True)
    fig.update_layout(
        xaxis_title="trials in the ensemble",
        yaxis_title=metric,
        legend_title_text="",
        margin={"t": 30},
    )
    fig.update_xaxes(dtick=1)
    return fig


def cost_figure(
    trials: pd.DataFrame,
    ensembles: pd.DataFrame,
    *,
    x: str,
    y: str,
    x_title: str,
    selected: Sequence[str] = (),
) -> go.Figure:
    """Accuracy (or NLL) `y` against inference cost `x` on a log axis: a point per trial,
    MixMo trials (M >= 2) coloured by M and vanilla ones (M = 1) in grey, and the deep
    ensembles of vanilla trials (`ensembles`, from `app.ensembles.deep_ensembles`) as a line
    labelled by their size k. Trial points carry their run id as customdata."""
    fig = go.Figure()
    members = trials.get(SIZE_BY, pd.Series(1, index=trials.index))
    palette = iter(px.colors.qualitative.D3)
    for n_members, group in trials.groupby(members, sort=True):
        vanilla = n_members == 1
        fig.add_trace(
            go.Scatter(
                x=group[x], y=group[y], mode="markers",
                name="vanilla (M=1)" if vanilla else f"MixMo M={n_members}",
                marker={"size": 10 if vanilla else 12, "symbol": "circle",
                        "color": "#7f7f7f" if vanilla else next(palette)},
                customdata=group[["run_id"]].to_numpy(), text=group["trial_id"],
                hovertemplate=f"%{{text}}<br>{x} %{{x:.4g}}<br>{y} %{{y:.4f}}<extra></extra>",
            )
        )  # fmt: skip
    if not ensembles.empty:
        fig.add_trace(
            go.Scatter(
                x=ensembles[x], y=ensembles[y], mode="lines+markers+text",
                name="deep ensemble of k vanilla trials",
                text=[f"k={k}" for k in ensembles["k"]], textposition="top center",
                line={"color": "black", "dash": "dot"},
                marker={"symbol": "diamond", "size": 11, "color": "black"},
                hovertext=ensembles["members"],
                hovertemplate=f"%{{text}}: %{{hovertext}}<br>{x} %{{x:.4g}}<br>{y} %{{y:.4f}}"
                "<extra></extra>",
            )
        )  # fmt: skip
    _label_overlaps(fig, trials, x, y)
    ringed = trials[trials["run_id"].isin(list(selected))]
    fig.add_trace(
        go.Scatter(
            x=ringed[x], y=ringed[y], mode="markers", name="selected", hoverinfo="skip",
            marker={"size": 24, "symbol": "circle-open", "color": "crimson", "line": {"width": 2}},
            customdata=ringed[["run_id"]].to_numpy(),
        )
    )  # fmt: skip
    fig.update_xaxes(type="log", title=x_title)
    fig.update_layout(yaxis_title=y, legend_title_text="", margin={"t": 30})
    return fig


def severity_figure(rows: pd.DataFrame, split: str) -> go.Figure:
    """Accuracy against corruption severity (0 = the same images clean), one panel per
    corruption, one line per trial (`app.shifts.severity_rows`)."""
    fig = px.line(
        rows, x="severity", y="acc", color="trial", facet_col="corruption", facet_col_wrap=5,
        markers=True, facet_row_spacing=0.12,
    )  # fmt: skip
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(title="", range=[0, 1.02])
    fig.update_layout(title=f"{split} accuracy by corruption and severity", margin={"t": 70})
    return fig


def roc_figure(curves: pd.DataFrame, title: str) -> go.Figure:
    """ROC curves (`app.shifts.roc_curves`): in-distribution images accepted against OOD
    images accepted, the chance diagonal and the 95 % line of FPR95."""
    fig = px.line(curves, x="fpr", y="tpr", color="trial")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"color": "grey", "dash": "dot"}))  # fmt: skip
    fig.add_hline(y=0.95, line={"color": "crimson", "dash": "dash", "width": 1},
                  annotation_text="95 % of in-distribution kept (FPR95)",
                  annotation_position="bottom right")  # fmt: skip
    fig.update_layout(
        title=title, xaxis_title="OOD images accepted (FPR)",
        yaxis_title="in-distribution images accepted (TPR)", margin={"t": 50},
    )  # fmt: skip
    return fig
