"""The backtest's diagnostic charts as SVG text (matplotlib, no display, no files).

Three charts, keyed by the names ``backtest.json`` lists under ``plots``:

- ``conditional_expectation``: mean holdout purchases by calibration frequency, actual vs each method
  (Fader, Hardie & Lee 2005, figure 3);
- ``tracking``: weekly cumulative repeat purchases over calibration and holdout, actual vs the purchase
  model (figure 2);
- ``deciles``: predicted vs actual holdout revenue per decile of predicted revenue, one panel per method.

The figures are drawn on matplotlib's object API with the SVG canvas, so no global backend is switched,
and the SVG text is reproducible (fixed hash salt, no date). matplotlib is imported when a chart is drawn,
not with this module: a run without a backtest never loads it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from forecast.evaluation.backtest import BacktestResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Plot name -> file name written next to backtest.json.
PLOT_FILES = {
    "conditional_expectation": "backtest_conditional_expectation.svg",
    "tracking": "backtest_tracking.svg",
    "deciles": "backtest_deciles.svg",
}
METHOD_LABELS = {"predictive": "predictive", "heuristic": "heuristic", "gradient_boosting": "gradient boosting"}
ACTUAL_COLOUR = "#222222"
METHOD_COLOURS = {"predictive": "#1f77b4", "heuristic": "#d62728", "gradient_boosting": "#2ca02c"}


def _new_figure(**settings: Any) -> Figure:
    """A matplotlib Figure (imported here, so that importing this module does not load matplotlib)."""
    from matplotlib.figure import Figure

    return Figure(**settings)


def _svg(figure: Figure) -> str:
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "clv-forecast", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def conditional_expectation_svg(result: BacktestResult) -> str:
    """Mean holdout purchases by calibration frequency: actual (bars) and every method (lines)."""
    rows = result.document["conditional_expectation"]
    labels = [row["frequency"] for row in rows]
    positions = list(range(len(rows)))
    figure = _new_figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    axes.bar(positions, [row["actual"] for row in rows], color="#cccccc", label="actual", edgecolor=ACTUAL_COLOUR)
    for method in result.methods:
        axes.plot(
            positions,
            [row["predicted"][method] for row in rows],
            marker="o",
            color=METHOD_COLOURS.get(method),
            label=METHOD_LABELS.get(method, method),
        )
    axes.set_xticks(positions, labels)
    axes.set_xlabel("repeat purchases in the calibration period")
    axes.set_ylabel("mean purchases in the holdout")
    axes.set_title(f"Conditional expectations, holdout {result.split.calibration_end} .. {result.split.holdout_end}")
    axes.legend(frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)


def tracking_svg(result: BacktestResult) -> str:
    """Weekly cumulative repeat purchases, actual vs model, with the calibration end marked."""
    tracking = result.tracking
    model = result.document["purchase_model"]["used"]
    figure = _new_figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    axes.plot(tracking["date"], tracking["actual"], color=ACTUAL_COLOUR, label="actual")
    axes.plot(
        tracking["date"], tracking["model"], color=METHOD_COLOURS["predictive"], linestyle="--", label=f"{model} model"
    )
    from matplotlib.dates import date2num

    axes.axvline(date2num(result.split.calibration_end), color="#888888", linestyle=":", label="calibration end")
    axes.set_xlabel("date")
    axes.set_ylabel("cumulative repeat purchases")
    axes.set_title("Tracking cumulative repeat purchases")
    axes.legend(frameon=False)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return _svg(figure)


def deciles_svg(result: BacktestResult) -> str:
    """Predicted vs actual holdout revenue per decile of predicted revenue, one panel per method."""
    methods = result.methods
    figure = _new_figure(figsize=(3.4 * len(methods), 3.8))
    axes_list = figure.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    for axes, method in zip(axes_list, methods, strict=True):
        deciles: list[dict[str, Any]] = result.document["methods"][method]["deciles"]
        positions = [row["decile"] for row in deciles]
        width = 0.4
        axes.bar([p - width / 2 for p in positions], [row["actual_revenue"] for row in deciles], width,
                 color="#cccccc", edgecolor=ACTUAL_COLOUR, label="actual")  # fmt: skip
        axes.bar([p + width / 2 for p in positions], [row["predicted_revenue"] for row in deciles], width,
                 color=METHOD_COLOURS.get(method), label="predicted")  # fmt: skip
        axes.set_xticks(positions)
        axes.set_xlabel("decile of predicted revenue (1 = top)")
        axes.set_title(METHOD_LABELS.get(method, method))
        axes.grid(axis="y", alpha=0.3)
    axes_list[0].set_ylabel("holdout revenue")
    axes_list[0].legend(frameon=False)
    return _svg(figure)


def backtest_plots(result: BacktestResult) -> dict[str, str]:
    """Every backtest chart as SVG text, keyed by the file name to write it to (see ``PLOT_FILES``)."""
    return {
        PLOT_FILES["conditional_expectation"]: conditional_expectation_svg(result),
        PLOT_FILES["tracking"]: tracking_svg(result),
        PLOT_FILES["deciles"]: deciles_svg(result),
    }
