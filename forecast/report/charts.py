"""The charts of the report and of the backtest: matplotlib figures rendered to SVG text, no network, no files.

Every function takes plain data and returns the ``<svg>`` element as a string, with a title, axis labels
with units and a legend. The report module computes what to draw; this module only draws it.
Figures are built with matplotlib's object API (``Figure``), never pyplot: no GUI backend, no global
figure registry, safe in a batch job.

This module is the one place that styles charts: the palette below (a series has the same colour in every
chart), the matplotlib settings ``STYLE`` every chart is drawn under, and ``svg_text``, which every chart is
rendered with (glyphs as paths, so a chart looks the same without any font installed).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

ACTUAL = "#4d4d4d"  # what happened: observed customers, purchases, spend
PREDICTIVE = "#1f5fa8"  # the probability models (purchase model x Gamma-Gamma)
HEURISTIC = "#e07b00"  # the marketing formula
GRADIENT_BOOSTING = "#2e8b57"  # the backtest's machine-learning baseline
PREVIOUS = "#9aa5b1"  # the previous run, beside the current one
WARNING = "#b3261e"  # a check that fails
INK = "#222222"  # error bars and reference lines
METHOD_COLOURS = {"predictive": PREDICTIVE, "heuristic": HEURISTIC, "gradient_boosting": GRADIENT_BOOSTING}
#: Colours of further series, after the methods' own.
MORE_COLOURS = ("#8a2be2", "#a0522d")

STYLE: dict[Any, Any] = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}

MAX_SCATTER_POINTS = 20_000  # a random sample of larger sets is drawn (the correlation uses all)
RASTER_ABOVE_POINTS = 2_000  # larger scatters are drawn as an embedded bitmap to keep the page small
THOUSANDS = FuncFormatter(lambda value, _position: f"{value:,.0f}")
PLAIN = FuncFormatter(lambda value, _position: f"{value:,g}")
_XML_PROLOGUE = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<metadata>.*?</metadata>", re.DOTALL)


def svg_text(fig: Figure, name: str, description: str) -> str:
    """Render a figure to an ``<svg>`` element ready to inline in HTML or to write to a file.

    Glyphs are drawn as paths, so the chart needs no font on the reader's machine. The ids other elements point
    to (clip paths, markers) get the chart's name as salt, so that several charts in one page never point into
    each other, and the text is the same for the same figure (no date).
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = _XML_PROLOGUE.sub("", buffer.getvalue()).strip()
    label = description.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" data-chart="{name}" ', 1)


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    """A figure of ``width`` x ``height`` inches with one axes (call it under ``STYLE``)."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def period_transactions(labels: Sequence[str], actual: np.ndarray, model: np.ndarray, model_name: str) -> str:
    """Bars of customers by number of repeat purchases: actual beside the model's expectation."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure()
        x = np.arange(len(labels))
        ax.bar(x - 0.2, actual, width=0.4, color=ACTUAL, label="actual customers")
        ax.bar(x + 0.2, model, width=0.4, color=PREDICTIVE, alpha=0.75, label=f"{model_name} model (expected)")
        ax.set_xticks(x, labels)
        ax.set_xlabel("repeat purchases in the observation period (count)")
        ax.set_ylabel("customers (count)")
        ax.yaxis.set_major_formatter(THOUSANDS)
        ax.set_title("Customers by number of repeat purchases: actual vs model")
        ax.legend()
        return svg_text(fig, "period_transactions", "Bar chart of customers by repeat purchases, actual vs model")


def heatmap(
    values: np.ndarray,
    frequency: np.ndarray,
    recency: np.ndarray,
    *,
    name: str,
    title: str,
    colorbar_label: str,
    time_unit: str,
    cmap: str = "viridis",
) -> str:
    """A frequency (rows) by recency (columns) heat map, frequent-and-recent customers top right."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure(5.6, 4.4)
        ax.grid(False)
        extent = (recency[0], recency[-1], frequency[0] - 0.5, frequency[-1] + 0.5)
        image = ax.imshow(values, origin="lower", aspect="auto", extent=extent, cmap=cmap, interpolation="nearest")
        colorbar = fig.colorbar(image, ax=ax)
        colorbar.set_label(colorbar_label)
        ax.set_xlabel(f"recency: time from first to last purchase ({time_unit}s)")
        ax.set_ylabel("frequency: repeat purchases (count)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        return svg_text(fig, name, title)


def spend_fit(observed: np.ndarray, customers: np.ndarray, grid: np.ndarray, density: np.ndarray) -> str:
    """Histogram of repeat buyers' observed average spend (each value counted for its ``customers``) with the
    Gamma-Gamma model's density over it."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure()
        upper = float(grid[-1])
        shown = observed <= upper
        ax.hist(observed[shown], bins=40, range=(0, upper), weights=customers[shown], density=True, color=ACTUAL,
                alpha=0.55, label=f"observed ({int(customers.sum()):,} repeat buyers)")  # fmt: skip
        ax.plot(grid, density, color=PREDICTIVE, linewidth=2, label="Gamma-Gamma model")
        ax.set_xlabel("average spend per repeat purchase (currency units)")
        ax.set_ylabel("density (share of buyers per currency unit)")
        ax.set_xlim(0, upper)
        ax.set_title("Spend model fit: observed vs model distribution of average spend")
        ax.legend()
        return svg_text(fig, "spend_fit", "Histogram of average spend with the model density")


def frequency_spend(
    frequency: np.ndarray, spend: np.ndarray, customers: np.ndarray, correlation: float, limit: float
) -> str:
    """Scatter of repeat buyers' frequency against their average spend, with the correlation: one dot per distinct
    (frequency, spend), at most ``MAX_SCATTER_POINTS`` of them (drawn in proportion to their ``customers``)."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure()
        rng = np.random.default_rng(0)  # fixed: the same data always gives the same picture
        buyers = int(customers.sum())
        label = f"repeat buyers (correlation r = {correlation:.2f})"
        if len(frequency) > MAX_SCATTER_POINTS:
            label = (
                f"{MAX_SCATTER_POINTS:,} of {len(frequency):,} distinct (frequency, spend) of {buyers:,} repeat "
                f"buyers (r = {correlation:.2f} on all)"
            )
            keep = rng.choice(len(frequency), MAX_SCATTER_POINTS, replace=False, p=customers / customers.sum())
            frequency, spend = frequency[keep], spend[keep]
        jitter = rng.uniform(-0.12, 0.12, len(frequency))  # spreads overlapping points only
        failed = abs(correlation) > limit
        ax.scatter(
            frequency * np.exp(jitter),
            spend,
            s=9,
            alpha=0.3,
            color=WARNING if failed else PREDICTIVE,
            label=label,
            rasterized=len(frequency) > RASTER_ABOVE_POINTS,
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_major_formatter(PLAIN)
        ax.set_xlabel("frequency: repeat purchases (count, log scale)")
        ax.set_ylabel("average spend per purchase (currency units, log scale)")
        verdict = "fails" if failed else "passes"
        ax.set_title(f"Frequency vs spend: independence check {verdict} (|r| limit {limit:g})")
        # Below the axes, not loc="best": "best" counts the points under each of nine candidate boxes on
        # every layout pass, most of the chart's drawing time; below, it never hides a point.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16))
        return svg_text(fig, "frequency_spend", "Scatter of frequency against average spend")


def segment_bars(
    segments: Sequence[str],
    predictive: np.ndarray,
    heuristic: np.ndarray,
    *,
    name: str,
    title: str,
    predictive_label: str,
    heuristic_label: str,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> str:
    """Grouped bars of predictive and heuristic CLV totals per segment, with the interval when known."""
    error = None
    if lower is not None and upper is not None:
        error = np.vstack([np.clip(predictive - lower, 0, None), np.clip(upper - predictive, 0, None)])
    return _paired_segment_bars(
        segments,
        (predictive, predictive_label, PREDICTIVE, error),
        (heuristic, heuristic_label, HEURISTIC),
        name,
        title,
    )


def decile_chart(deciles: Sequence[str], predicted: dict[str, np.ndarray], actual: np.ndarray, unit: str) -> str:
    """Predicted vs actual holdout value per decile of predicted value, one line per method."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure()
        x = np.arange(len(deciles))
        ax.bar(x, actual, color=ACTUAL, alpha=0.5, label="actual")
        colours = (*METHOD_COLOURS.values(), *MORE_COLOURS)
        for i, (method, values) in enumerate(predicted.items()):
            colour = METHOD_COLOURS.get(method, colours[i % len(colours)])
            ax.plot(x, values, marker="o", color=colour, label=f"{method} (predicted)")
        ax.set_xticks(x, list(deciles))
        ax.set_xlabel("decile of predicted value (1 = highest)")
        ax.set_ylabel(f"holdout {unit}")
        ax.set_title("Backtest by decile: predicted vs actual")
        ax.legend()
        return svg_text(fig, "backtest_deciles", "Decile chart of predicted and actual holdout values")


def paired_bars(
    labels: Sequence[str],
    first: np.ndarray,
    second: np.ndarray,
    *,
    name: str,
    title: str,
    first_label: str,
    second_label: str,
) -> str:
    """Two bars per label (for example the previous and the current run), values written at the bar ends."""
    return _paired_segment_bars(
        labels, (first, first_label, PREVIOUS, None), (second, second_label, PREDICTIVE), name, title
    )


def _paired_segment_bars(
    labels: Sequence[str],
    first: tuple[np.ndarray, str, str, np.ndarray | None],
    second: tuple[np.ndarray, str, str],
    name: str,
    title: str,
) -> str:
    """Horizontal bar pairs of segment CLV totals: (values, legend label, colour[, error bars]) for each bar."""
    (first_values, first_label, first_color, first_error), (second_values, second_label, second_color) = first, second
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure(7.0, max(3.0, 0.9 + 0.55 * len(labels)))
        y = np.arange(len(labels))
        ax.barh(y - 0.2, first_values, height=0.4, color=first_color, label=first_label, xerr=first_error,
                error_kw={"ecolor": INK, "capsize": 3, "linewidth": 1})  # fmt: skip
        ax.barh(y + 0.2, second_values, height=0.4, color=second_color, label=second_label)
        ax.set_yticks(y, list(labels))
        ax.invert_yaxis()
        ax.set_xlabel("customer lifetime value, segment total (currency units)")
        ax.set_title(title)
        ax.xaxis.set_major_formatter(THOUSANDS)
        for bars in ax.containers:
            if isinstance(bars, BarContainer):
                ax.bar_label(bars, labels=[f"{b.get_width():,.0f}" for b in bars.patches], padding=3, fontsize=8)
        ax.margins(x=0.12)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16 - 0.3 / len(labels)), ncol=2)
        return svg_text(fig, name, title)
