"""The backtest's diagnostic charts, written as SVG files next to backtest.json and shown in the report.

Three charts, keyed by the names ``backtest.json`` lists under ``plots`` (file names: ``run_folder.PLOT_FILES``):

- ``conditional_expectation``: mean holdout purchases by calibration frequency, actual vs each method
  (Fader, Hardie & Lee 2005, figure 3);
- ``tracking``: weekly cumulative repeat purchases over calibration and holdout, actual vs the purchase
  model (figure 2);
- ``deciles``: predicted vs actual holdout revenue per decile of predicted revenue, one panel per method.

They are drawn in the report's one chart style (``forecast.report.charts``: palette, ``STYLE``, ``svg_text``).
The pipeline imports this module only when it writes a backtest, so a run without one never loads matplotlib.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2), section 4.
"""

from __future__ import annotations

from typing import Any

import matplotlib
from matplotlib.dates import date2num
from matplotlib.figure import Figure

from forecast.evaluation.backtest import BacktestResult
from forecast.report.charts import ACTUAL, INK, METHOD_COLOURS, PREDICTIVE, STYLE, new_figure, svg_text
from forecast.report.run_folder import PLOT_FILES

METHOD_LABELS = {"predictive": "predictive", "heuristic": "heuristic", "gradient_boosting": "gradient boosting"}


def conditional_expectation_svg(result: BacktestResult) -> str:
    """Mean holdout purchases by calibration frequency: actual (bars) and every method (lines)."""
    rows = result.document["conditional_expectation"]
    labels = [row["frequency"] for row in rows]
    positions = list(range(len(rows)))
    title = f"Conditional expectations, holdout {result.split.calibration_end} .. {result.split.holdout_end}"
    with matplotlib.rc_context(STYLE):
        figure, axes = new_figure(7, 4.2)
        axes.bar(positions, [row["actual"] for row in rows], color=ACTUAL, alpha=0.5, label="actual")
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
        axes.set_title(title)
        axes.legend()
        return svg_text(figure, "backtest_conditional_expectation", title)


def tracking_svg(result: BacktestResult) -> str:
    """Weekly cumulative repeat purchases, actual vs model, with the calibration end marked."""
    tracking = result.tracking
    model = result.document["purchase_model"]["used"]
    title = "Tracking cumulative repeat purchases"
    with matplotlib.rc_context(STYLE):
        figure, axes = new_figure(7, 4.2)
        axes.plot(tracking["date"], tracking["actual"], color=ACTUAL, label="actual")
        axes.plot(tracking["date"], tracking["model"], color=PREDICTIVE, linestyle="--", label=f"{model} model")
        axes.axvline(date2num(result.split.calibration_end), color=INK, linestyle=":", label="calibration end")
        axes.set_xlabel("date")
        axes.set_ylabel("cumulative repeat purchases")
        axes.set_title(title)
        axes.legend()
        figure.autofmt_xdate()
        return svg_text(figure, "backtest_tracking", title)


def deciles_svg(result: BacktestResult) -> str:
    """Predicted vs actual holdout revenue per decile of predicted revenue, one panel per method."""
    methods = result.methods
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(3.4 * len(methods), 3.8))
        axes_list = figure.subplots(1, len(methods), sharey=True, squeeze=False)[0]
        for axes, method in zip(axes_list, methods, strict=True):
            deciles: list[dict[str, Any]] = result.document["methods"][method]["deciles"]
            positions = [row["decile"] for row in deciles]
            width = 0.4
            axes.bar([p - width / 2 for p in positions], [row["actual_revenue"] for row in deciles], width,
                     color=ACTUAL, alpha=0.5, label="actual")  # fmt: skip
            axes.bar([p + width / 2 for p in positions], [row["predicted_revenue"] for row in deciles], width,
                     color=METHOD_COLOURS.get(method), label="predicted")  # fmt: skip
            axes.set_xticks(positions)
            axes.set_xlabel("decile of predicted revenue (1 = top)")
            axes.set_title(METHOD_LABELS.get(method, method))
        axes_list[0].set_ylabel("holdout revenue")
        axes_list[0].legend()
        return svg_text(figure, "backtest_deciles", "Predicted vs actual holdout revenue per decile, per method")


def backtest_plots(result: BacktestResult) -> dict[str, str]:
    """Every backtest chart as SVG text, keyed by the file name to write it to (``run_folder.PLOT_FILES``)."""
    return {
        PLOT_FILES["conditional_expectation"]: conditional_expectation_svg(result),
        PLOT_FILES["tracking"]: tracking_svg(result),
        PLOT_FILES["deciles"]: deciles_svg(result),
    }
