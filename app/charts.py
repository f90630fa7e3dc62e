"""The dashboard's figures: plain functions from frames (app/queries.py) to plotly figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

COLOUR_BY = "param.mixing.block"  # MixMo's mixing block: linear, cut, ...
SIZE_BY = "param.model.n_members"  # M, the number of subnetworks


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
    """Trials as points (colour: mixing block, size: M, symbol: status), the Pareto front
    `front` (run ids) as a line and the `selected` run ids ringed. Each point's customdata
    holds its run id, so a chart selection maps back to trials."""
    shown = trials[trials[x].notna() & trials[y].notna()]
    hover = list(dict.fromkeys([*params, *[c for c in (COLOUR_BY, SIZE_BY) if c in shown]]))
    frame = shown.rename(columns={c: _short(c) for c in hover})
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
        hover_data={**{_short(c): True for c in hover}, "status": True},
        custom_data=["run_id"],
    )
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


def parallel_figure(trials: pd.DataFrame, params: Sequence[str], target: str) -> go.Figure:
    """Parallel coordinates: one axis per parameter, the last one `target` (also the colour)."""
    shown = trials[trials[target].notna()]
    dimensions = []
    for column in [*params, target]:
        values = shown[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            dimensions.append({"label": _short(column), "values": values})
        else:
            labels = sorted(values.dropna().astype(str).unique())
            codes = values.astype(str).map({v: i for i, v in enumerate(labels)})
            dimensions.append(
                {
                    "label": _short(column),
                    "values": codes,
                    "tickvals": list(range(len(labels))),
                    "ticktext": labels,
                }
            )
    line = {"color": shown[target], "colorscale": "Viridis", "showscale": True}
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    fig.update_layout(margin={"l": 60, "r": 60, "t": 50})
    return fig


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
        calibration, x="trial", y="value", color="scaling", barmode="group", facet_col="metric"
    )
    fig.update_yaxes(matches=None, showticklabels=True, title="")
    fig.update_layout(title=f"{split} calibration", margin={"t": 60})
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
