"""The run report: one self-contained HTML file with the diagnostic charts and tables of a run folder.

``build_report(run_dir)`` reads only the run folder's files (manifest.json, the columns of
customers.parquet it draws, segments.csv, the fitted models, and backtest.json with its plot files when a
backtest ran; ``forecast.report.run_folder``), draws the charts as inline SVG (``forecast.report.charts``)
and writes ``report.html`` beside them. The page loads nothing from anywhere: no scripts, fonts, styles or
images outside the file itself. The customers are drawn from a digest of their unique histories
(``forecast.report.digest``): ``forecast run`` on DuckDB passes its in-memory customer table, the same rows the
Parquet file holds, so the report does not read the file back; the Spark engine passes the digest of its compressed
summary.

Per-customer figures are computed on NumPy arrays (bincounts, one boolean mask), not pandas group-bys
or row filters of the whole table, so that the report stays a small part of a run with millions of
customers. matplotlib is imported only when a chart is drawn.

Every section renders whatever the run holds and says what it does not hold (no backtest, no previous
run to compare with, no intervals or budget columns).
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from forecast.config import DAYS_PER_MONTH, DAYS_PER_UNIT
from forecast.data.compress import quantile_of_counts
from forecast.errors import ArtifactError, ForecastError
from forecast.models import GammaGamma, PurchaseModel
from forecast.models.gamma_gamma import FREQUENCY_SPEND_CORRELATION_LIMIT
from forecast.report.digest import ACTIVE_THRESHOLD, CustomerDigest
from forecast.report.run_folder import REPORT_HTML, RunFolder, read_models, read_run
from forecast.value.segments import ALL_SEGMENTATION, VALUE_TIERS, segmentation_name

TEMPLATE_NAME = "report.html.j2"
MAX_REPEAT_BUCKET = 7  # the period-transactions chart groups 7 or more repeat purchases
PLOT_SUFFIXES = {".svg": "image/svg+xml", ".png": "image/png"}
#: Columns of customers.parquet the report needs, and those it uses when present.
REQUIRED_COLUMNS = ("frequency", "recency", "T", "monetary_value", "p_alive")
OPTIONAL_COLUMNS = ("clv_lower", "clv_upper")

SECTIONS = {
    "headline": "Headline figures",
    "model-fit": "Model fit",
    "backtest": "Backtest: predictive vs heuristic",
    "segments": "Segments and budget",
    "drift": "Drift since the previous run",
    "quality": "Data quality",
    "about": "About this run",
}

MODEL_DESCRIPTIONS = {
    "bgnbd": (
        "BG/NBD (beta-geometric / negative binomial distribution)",
        "Every customer buys at their own steady pace while they are still a customer, and after each purchase "
        "may leave for good with their own probability. Nobody announces that they left: the model infers it "
        "from how long it has been since a customer's last purchase, compared with how often they used to buy.",
    ),
    "mbgnbd": (
        "MBG/NBD (modified BG/NBD)",
        "Like BG/NBD (every customer buys at their own pace and may leave after a purchase), except that a "
        "customer may also leave right after the first purchase, so one-time buyers can be lost customers too.",
    ),
    "nbd": (
        "NBD (negative binomial distribution, no dropout)",
        "Every customer buys at their own steady pace and nobody leaves: the data showed no dropout, so the "
        "configured model was replaced by this one (see the warnings). P(alive) is 1 for everyone.",
    ),
    "pareto": (
        "Pareto/NBD",
        "Every customer buys at their own steady pace while they are still a customer and leaves, unannounced, at "
        "a random moment of their own. The model infers who is still there from the time since the last purchase.",
    ),
}

SPEND_DESCRIPTION = (
    "Gamma-Gamma spend model",
    "Every customer has their own typical amount per purchase, and single purchases scatter around it. For "
    "customers with few purchases the forecast leans toward the average of all customers; with many purchases, "
    "toward the customer's own average. It assumes how much people spend does not depend on how often they buy.",
)

COLUMN_LABELS = {
    "segment": "Segment",
    "customers": "Customers",
    "revenue_to_date": "Revenue to date",
    "mean_p_alive": "Mean P(alive)",
    "expected_purchases": "Expected purchases",
    "clv_total": "Predictive CLV",
    "clv": "Predictive CLV",
    "clv_heuristic": "Heuristic CLV",
    "rfm_group": "RFM group",
    "clv_heuristic_total": "Heuristic CLV",
    "heuristic_gap": "Gap, unmatched spans (heuristic − predictive)",
    "clv_lifetime": "Lifetime CLV",
    "clv_lifetime_total": "Lifetime CLV",
    "clv_matched": "Predictive CLV, matched span",
    "clv_matched_total": "Predictive CLV, matched span",
    "clv_heuristic_matched_total": "Heuristic CLV, matched span",
    "heuristic_gap_matched": "Gap, matched span (heuristic − predictive)",
    "matched_span_months": "Matched span (months)",
    "clv_net": "Predictive CLV, net of costs",
    "clv_net_total": "Predictive CLV, net of costs",
    "clv_heuristic_net": "Heuristic CLV, net of costs",
    "clv_heuristic_net_total": "Heuristic CLV, net of costs",
    "clv_matched_net": "Predictive CLV, matched span, net of costs",
    "clv_matched_net_total": "Predictive CLV, matched span, net of costs",
    "avg_purchase_value": "Avg purchase value",
    "purchases_per_year": "Purchases per year",
    "mae_purchases": "MAE purchases",
    "mae_revenue": "MAE revenue",
    "rmse_revenue": "RMSE revenue",
    "spearman_revenue": "Spearman rank corr.",
    "top20_capture": "Top-20% capture",
    "total_revenue_error": "Total revenue error",
    "normalized_gini": "Normalized Gini",
    "per_1000_customers": "Log-likelihood per 1,000 customers",
    "behind_best_per_1000": "Behind the best, per 1,000",
    "standard_error_per_1000": "Standard error, per 1,000",
    "holdout_log_likelihood_per_1000": "Holdout log-likelihood per 1,000",
    "rmse_purchases": "RMSE purchases",
    "predicted_purchases": "Predicted purchases",
    "predicted_revenue": "Predicted revenue",
    "clv_total_lower": "Predictive CLV, lower",
    "clv_total_upper": "Predictive CLV, upper",
    "clv_lower_total": "Predictive CLV, lower",
    "clv_upper_total": "Predictive CLV, upper",
    "new_customer_clv": "New-customer CLV",
    "max_cac": "Max acquisition cost",
    "value_at_risk": "Value at risk",
}
ACRONYMS = {"clv": "CLV", "bic": "BIC", "aic": "AIC", "se": "SE", "mae": "MAE", "rmse": "RMSE", "cac": "CAC",
            "rfm": "RFM", "ltv": "LTV", "ci": "CI"}  # fmt: skip
SEGMENT_COLUMN_ORDER = [
    "segment", "customers", "clv_total", "clv_total_lower", "clv_total_upper", "clv_lower_total", "clv_upper_total",
    "clv_heuristic_total", "heuristic_gap", "matched_span_months", "clv_matched_total", "clv_heuristic_matched_total",
    "heuristic_gap_matched", "clv_net_total", "clv_heuristic_net_total", "clv_matched_net_total", "clv_lifetime_total",
    "mean_p_alive", "expected_purchases", "revenue_to_date", "avg_purchase_value", "purchases_per_year",
]  # fmt: skip
#: Segment columns net of the cost of serving customers: the same as the gross ones when a run has no costs.
NET_SEGMENT_COLUMNS = ["clv_net_total", "clv_heuristic_net_total", "clv_matched_net_total"]
SHARE_WORDS = ("p_alive", "capture", "share", "rate")
MONEY_WORDS = ("clv", "revenue", "value", "cac", "gap", "risk", "spend", "margin")


@dataclass(frozen=True)
class Table:
    """A table ready for the template: header labels, formatted cells, which columns are numeric."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    caption: str = ""
    total_row: bool = False  # the last row is a total, shown in bold


@dataclass(frozen=True)
class Chart:
    """One figure: inline SVG markup, or a data URI for a plot file written by another step."""

    name: str
    caption: str
    svg: Markup | None = None
    image_uri: str | None = None
    wide: bool = True


def read_report_run(run_dir: str | Path, customers: pd.DataFrame | None = None) -> RunFolder:
    """Read a run folder with the columns of customers.parquet the report draws (``REQUIRED_COLUMNS`` and those of
    ``OPTIONAL_COLUMNS`` the file holds).

    Raises
    ------
    ArtifactError
        The folder is not a finished run, or its customer table lacks a column of ``REQUIRED_COLUMNS``.
    """
    run = read_run(run_dir, customers, columns=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
    missing = sorted(set(REQUIRED_COLUMNS) - set(run.customers.columns))
    if missing:
        raise ArtifactError(f"{run.path / 'customers.parquet'} lacks the columns {missing}. Re-run `forecast run`.")
    return run


# --- formatting ----------------------------------------------------------------------------------------


def label(column: str) -> str:
    """A column name as a table header."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    words = [ACRONYMS.get(word, word) for word in column.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def format_value(value: Any, column: str = "") -> str:
    """Format a cell: thousands separators for large numbers, percentages for shares, text as is."""
    if value is None or (not isinstance(value, list | dict | tuple | str) and bool(pd.isna(value))):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            return "∞" if number > 0 else "−∞"
        name = column.lower()
        if "relative_change" in name:
            return f"{number:+.1%}"
        if any(word in name for word in SHARE_WORDS) and abs(number) <= 1 and "per" not in name:
            return f"{number:.1%}"
        if abs(number) >= 100:
            return f"{number:,.0f}"
        if abs(number) >= 1 or any(word in name for word in MONEY_WORDS):
            return f"{number:,.2f}"
        return f"{number:.3g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)[:200]
    return str(value)


def years(value: Any) -> str:
    """A number of years, as short as it can be written (3, 2.5, 4.17)."""
    return f"{float(value):.3g}" if isinstance(value, int | float) else "?"


def money(value: float) -> str:
    """A currency amount for the headline cards (no currency symbol: the data does not say which)."""
    return f"{value:,.0f}"


def interval_bounds(column: str, columns: list[str]) -> tuple[str, str] | None:
    """The columns holding the interval of ``column`` (x_lower/x_upper, or a_lower_total/a_upper_total for
    a_total), when the table has both."""
    candidates = [(f"{column}_lower", f"{column}_upper")]
    if column.endswith("_total"):
        stem = column.removesuffix("_total")
        candidates.append((f"{stem}_lower_total", f"{stem}_upper_total"))
    for low, high in candidates:
        if low in columns and high in columns:
            return low, high
    return None


def frame_table(frame: pd.DataFrame, caption: str = "", total_row: bool = False) -> Table:
    """A data frame as a Table, every cell formatted by its column.

    A column with interval columns beside it (``x_lower``, ``x_upper``) is shown as one column,
    "value (lower – upper)", and the bound columns are left out.
    """
    columns = [str(c) for c in frame.columns]
    bounds = {c: b for c in columns if (b := interval_bounds(c, columns)) is not None}
    hidden = {name for pair in bounds.values() for name in pair}
    shown = [c for c in columns if c not in hidden]
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column in shown:
            cell = format_value(record[column], column)
            if column in bounds:
                low, high = (record[b] for b in bounds[column])
                if all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
                    cell += f" ({format_value(low, column)} – {format_value(high, column)})"
            cells.append(cell)
        rows.append(cells)
    numeric = [bool(pd.api.types.is_numeric_dtype(frame[c])) for c in shown]
    headers = [label(c) + (" (interval)" if c in bounds else "") for c in shown]
    return Table(headers, rows, numeric, caption, total_row)


def mapping_tables(data: Any, caption: str, depth: int = 0) -> list[Table]:
    """Tables for a JSON value of unknown shape: scalars as key/value rows, lists of records and dicts of dicts
    as tables, anything deeper one level further down."""
    if isinstance(data, list):
        if data and all(isinstance(item, dict) for item in data):
            return [frame_table(pd.DataFrame(data), caption)]
        return [Table(["Value"], [[format_value(v)] for v in data], [False], caption)]
    if not isinstance(data, dict):
        return [Table(["Value"], [[format_value(data)]], [False], caption)]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    tables = []
    if scalars:
        tables.append(Table(["Item", "Value"], [[label(k), format_value(v, k)] for k, v in scalars.items()],
                            [False, True], caption))  # fmt: skip
    for key, value in data.items():
        if key in scalars:
            continue
        sub_caption = f"{caption}: {label(key)}" if caption else label(key)
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(v, dict) for v in value.values())
            and all(not isinstance(x, dict | list) for v in value.values() for x in v.values())
        ):
            frame = pd.DataFrame.from_dict(value, orient="index").rename_axis("name").reset_index()
            tables.append(frame_table(frame, sub_caption))
        elif depth < 2:
            tables.extend(mapping_tables(value, sub_caption, depth + 1))
    return tables


# --- headline ------------------------------------------------------------------------------------------


def _total_interval(run: RunFolder) -> tuple[float, float] | None:
    """The interval of the total predictive CLV, from the manifest totals or the segment table's 'all' row."""
    totals = run.manifest.get("totals", {})
    candidates = [(totals.get(low), totals.get(high)) for low, high in (("clv_lower", "clv_upper"),
                  ("clv_total_lower", "clv_total_upper"))]  # fmt: skip
    if run.segments is not None and "segmentation" in run.segments.columns:
        everyone = run.segments[run.segments["segmentation"] == ALL_SEGMENTATION]
        bounds = _interval_columns(run.segments)
        if len(everyone) == 1 and bounds is not None:
            candidates.append((everyone[bounds[0]].iloc[0], everyone[bounds[1]].iloc[0]))
    for low, high in candidates:
        if all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
            return float(low), float(high)
    return None


def _interval_columns(segments: pd.DataFrame) -> tuple[str, str] | None:
    """Names of the columns holding the interval of a segment's predictive CLV total, when the table has them."""
    return interval_bounds("clv_total", [str(c) for c in segments.columns])


def headline(run: RunFolder, digest: CustomerDigest) -> dict[str, Any]:
    """The headline cards: customers, active share, predictive CLV (horizon and lifetime), and the predictive and
    heuristic totals with their gap over the same discounted months (``matched_comparison``)."""
    manifest = run.manifest
    config = manifest.get("config", {})
    totals = manifest.get("totals", {})
    horizon = manifest.get("horizon_months", config.get("horizon_months"))
    margin = config.get("margin")
    lifespan = manifest.get("heuristic", {}).get("lifespan_years")
    clv_total = float(totals["clv"])
    heuristic_total = float(totals["clv_heuristic"])
    mean_alive, share_alive = digest.mean_alive, digest.share_alive
    interval = _total_interval(run)
    level = config.get("ci_level", config.get("budget", {}).get("ci_level"))
    interval_text = (
        f"{f'{level:.0%} ' if isinstance(level, float) else ''}{interval_name(manifest)} {money(interval[0])} – "
        f"{money(interval[1])}"
        if interval
        else "no interval in this run"
    )
    margin_text = f"at {margin:.0%} margin" if isinstance(margin, int | float) else ""
    plain = {"predictive": clv_total, "heuristic": heuristic_total, "horizon": horizon, "lifespan": years(lifespan)}
    comparison = matched_comparison(manifest)
    cards = [
        {"label": "Customers", "value": f"{digest.customers:,}", "detail": f"as of {manifest.get('as_of', '?')}"},
        {
            "label": "Active share",
            "value": f"{mean_alive:.0%}",
            "detail": f"mean P(alive); {share_alive:.0%} of customers have P(alive) > {ACTIVE_THRESHOLD:.0%}",
        },
        {
            "label": "Predictive CLV",
            "kind": "predictive",
            "value": money(clv_total),
            "detail": f"next {horizon} months, discounted, {margin_text}; {interval_text}",
        },
        *lifetime_cards(totals.get("clv_lifetime"), config.get("monthly_discount_rate"), margin_text, comparison),
        *(comparison_cards(comparison, plain, margin_text) if comparison else unmatched_cards(plain, margin_text)),
        *net_cards(totals, comparison, horizon),
    ]
    expected = float(totals["expected_purchases"])
    return {
        "cards": cards,
        "interval": interval,
        "expected_purchases": f"{expected:,.0f}",
        "horizon_months": horizon,
        "lifespan_years": years(lifespan),
        "comparison_text": comparison_sentences(comparison, plain),
        "span_months": comparison["span_months"] if comparison else None,
        "mean_alive": f"{mean_alive:.1%}",
        "share_alive": f"{share_alive:.1%}",
        "has_customer_intervals": digest.has_customer_intervals,
        "interval_note": interval_note(manifest),
    }


def interval_name(manifest: dict[str, Any]) -> str:
    """What the totals' interval covers, in words: the manifest's ``intervals.totals`` (none in older runs)."""
    kind = manifest.get("intervals", {}).get("totals") if isinstance(manifest.get("intervals"), dict) else None
    if kind == "predictive":
        return "predictive interval (the customers' own randomness and the parameters' uncertainty)"
    if kind == "parameters":
        return "interval of the parameters' uncertainty only"
    return "interval"


def interval_note(manifest: dict[str, Any]) -> str:
    """One sentence on what the total's interval covers and what it leaves out."""
    if interval_name(manifest).startswith("predictive"):
        return (
            "The interval on the predictive total is where the realised total should fall: it covers the customers' "
            "own randomness (how many purchases, when they stop, what they spend) and the uncertainty of the fitted "
            "parameters, not a change in the market or a wrong model (the backtest shows how far those went). The "
            "per-customer intervals in customers.parquet cover the parameters only."
        )
    return "The interval on the predictive total reflects the uncertainty of the fitted model parameters only."


def matched_comparison(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's like-for-like ``comparison`` (``forecast.value.comparison.comparison_record``), or None for
    a run written before it had one."""
    comparison = manifest.get("comparison")
    numbers = ("span_months", "predictive", "heuristic", "gap")
    if not isinstance(comparison, dict) or not all(isinstance(comparison.get(k), int | float) for k in numbers):
        return None
    return comparison


def _basis(comparison: dict[str, Any]) -> str:
    """The comparison's basis in words ('the same 36 months, each discounted at 1% a month')."""
    basis = comparison.get("basis")
    return basis if isinstance(basis, str) and basis else f"the same {comparison['span_months']} months"


def _ratio(heuristic: float, predictive: float) -> str:
    """heuristic / predictive as '1.7×'."""
    return f"{heuristic / predictive:.1f}×" if predictive else "undefined (no predictive value)"


def lifetime_cards(
    lifetime: Any, rate: Any, margin_text: str, comparison: dict[str, Any] | None
) -> list[dict[str, str]]:
    """The lifetime CLV card, when the run has a finite clv_lifetime total, with the share of it that falls in the
    comparison's span."""
    if not isinstance(lifetime, int | float) or not math.isfinite(lifetime):
        return []
    discount = f"each discounted at {rate * 100:.3g}% a month" if isinstance(rate, int | float) else "discounted"
    detail = f"every future month, {discount}, {margin_text}"
    if comparison and lifetime > 0:
        share = float(comparison["predictive"]) / lifetime
        detail += f"; {share:.0%} of it in the first {comparison['span_months']} months"
    return [{"label": "Lifetime CLV", "kind": "predictive", "value": money(float(lifetime)), "detail": detail}]


def comparison_cards(comparison: dict[str, Any], plain: dict[str, Any], margin_text: str) -> list[dict[str, str]]:
    """Predictive and heuristic totals over the heuristic's span, discounted alike, and their gap."""
    span, basis = comparison["span_months"], _basis(comparison)
    predictive, heuristic = float(comparison["predictive"]), float(comparison["heuristic"])
    return [
        {
            "label": f"Predictive CLV, {span} months",
            "kind": "predictive",
            "value": money(predictive),
            "detail": f"{basis} (the heuristic's {plain['lifespan']}-year lifespan), {margin_text}",
        },
        {
            "label": f"Heuristic CLV, {span} months",
            "kind": "heuristic",
            "value": money(heuristic),
            "detail": f"{basis}, {margin_text}; {money(plain['heuristic'])} over {plain['lifespan']} years "
            "undiscounted",
        },
        {
            "label": "Gap",
            "value": money(float(comparison["gap"])),
            "detail": f"heuristic − predictive over {basis}; the heuristic is {_ratio(heuristic, predictive)} the "
            "predictive figure",
        },
    ]


def costs_text(net: dict[str, Any]) -> str:
    """The costs of serving a customer in words ('costs of 5.00 a purchase and 2.00 an active month')."""
    per_purchase, per_month = float(net["cost_per_purchase"]), float(net["cost_per_active_month"])
    return f"costs of {per_purchase:,.2f} a purchase and {per_month:,.2f} an active month"


def net_cards(totals: dict[str, Any], comparison: dict[str, Any] | None, horizon: Any) -> list[dict[str, str]]:
    """The predictive CLV net of the cost of serving customers, and the matched comparison net of costs, when the
    run has costs (the manifest's ``comparison.net``)."""
    net = comparison.get("net") if comparison else None
    if not isinstance(net, dict) or not isinstance(totals.get("clv_net"), int | float) or comparison is None:
        return []
    predictive, heuristic = float(net["predictive"]), float(net["heuristic"])
    return [
        {
            "label": "Predictive CLV, net of costs",
            "kind": "predictive",
            "value": money(float(totals["clv_net"])),
            "detail": f"next {horizon} months, discounted, after {costs_text(net)}; "
            f"gross {money(float(totals['clv']))}",
        },
        {
            "label": "Gap, net of costs",
            "value": money(float(net["gap"])),
            "detail": f"heuristic {money(heuristic)} − predictive {money(predictive)} over {_basis(comparison)}, "
            f"both after {costs_text(net)}",
        },
    ]


def unmatched_cards(plain: dict[str, Any], margin_text: str) -> list[dict[str, str]]:
    """The heuristic and gap cards of a run without a like-for-like comparison: said not to be like for like."""
    return [
        {
            "label": "Heuristic CLV",
            "kind": "heuristic",
            "value": money(plain["heuristic"]),
            "detail": f"{plain['lifespan']}-year lifespan, undiscounted, {margin_text}; sum over customers",
        },
        {
            "label": "Gap",
            "value": money(plain["heuristic"] - plain["predictive"]),
            "detail": f"heuristic ({plain['lifespan']} years, undiscounted) − predictive (next {plain['horizon']} "
            "months, discounted): not like for like; runs of this version compare them over the same months",
        },
    ]


def comparison_sentences(comparison: dict[str, Any] | None, plain: dict[str, Any]) -> str:
    """Why the two CLV figures differ, on the matched basis when the run has one, and what the gap means for a
    budget."""
    plain_text = (
        f"{money(plain['heuristic'])} for {plain['lifespan']} undiscounted years against {money(plain['predictive'])} "
        f"for the next {plain['horizon']} discounted months, {_ratio(plain['heuristic'], plain['predictive'])}"
    )
    if comparison is None:
        return (
            f"The plain figures ({plain_text}) are not like for like: they cover different spans and only the "
            "predictive one is discounted. This run has no like-for-like comparison; a run of this version adds one."
        )
    span, basis = comparison["span_months"], _basis(comparison)
    predictive, heuristic, gap = (float(comparison[k]) for k in ("predictive", "heuristic", "gap"))
    direction = "more" if gap >= 0 else "less"
    return (
        f"Compared like for like, over {basis} (the heuristic's {plain['lifespan']}-year lifespan), the heuristic "
        f"expects {money(heuristic)} and the models {money(predictive)}: {_ratio(heuristic, predictive)} as much. "
        f"A budget built on the heuristic assumes {money(abs(gap))} {direction} value over the same {span} "
        "discounted months than the models expect. On the same span and discounting, that difference is the models' "
        "view of the customers: the heuristic has every customer keep buying at their past pace, the models let "
        f"customers who have gone quiet count for less. The plain figures ({plain_text}) are not like for like: the "
        "rest of their difference is the span and the discounting."
    ) + net_sentence(comparison)


def net_sentence(comparison: dict[str, Any]) -> str:
    """The matched comparison net of the cost of serving customers, when the run has costs; else ''."""
    net = comparison.get("net")
    if not isinstance(net, dict):
        return ""
    return (
        f" Net of {costs_text(net)}, the heuristic expects {money(float(net['heuristic']))} and the models "
        f"{money(float(net['predictive']))} over the same months: the net gap is {money(float(net['gap']))}."
    )


# --- model fit -----------------------------------------------------------------------------------------


def period_transactions(digest: CustomerDigest, model: PurchaseModel) -> pd.DataFrame:
    """Customers by number of repeat purchases (0, 1, ..., 7+): actual counts and the model's expectation.

    The model's count for x purchases is the sum over customers of P(X(T_i) = x), the probability that a
    customer observed for T_i time units since the first purchase makes x repeat purchases.

    Returns
    -------
    pandas.DataFrame
        Indexed by the bucket label ("0", ..., "7+"), columns actual and model.

    References
    ----------
    Fader, Hardie & Lee (2005), figure 2 (the calibration-period histogram).
    """
    by_frequency = np.zeros(max(MAX_REPEAT_BUCKET + 1, len(digest.frequency_counts)))
    by_frequency[: len(digest.frequency_counts)] = digest.frequency_counts
    actual = np.append(by_frequency[:MAX_REPEAT_BUCKET], by_frequency[MAX_REPEAT_BUCKET:].sum())
    ages, customers_of_age = digest.ages, digest.customers_of_age  # each distinct T evaluated once
    expected = [float(model.probability_of_purchases(n, ages) @ customers_of_age) for n in range(MAX_REPEAT_BUCKET)]
    expected.append(digest.customers - sum(expected))
    labels = [str(n) for n in range(MAX_REPEAT_BUCKET)] + [f"{MAX_REPEAT_BUCKET}+"]
    return pd.DataFrame({"actual": actual, "model": expected}, index=pd.Index(labels, name="repeat_purchases"))


def frequency_recency_grid(digest: CustomerDigest) -> tuple[np.ndarray, np.ndarray, float]:
    """Frequencies 0..F (F near the 99th percentile) and recencies 0..max T for the heat maps, and max T."""
    T_max = float(digest.ages.max())
    top = int(np.ceil(quantile_of_counts(digest.frequency_counts, 0.99)))
    frequencies = np.arange(0, min(max(top, 5), 60) + 1, dtype=float)
    recencies = np.linspace(0.0, T_max, 60)
    return frequencies, recencies, T_max


def parameter_rows(purchases: PurchaseModel, spend: GammaGamma, time_unit: str) -> list[dict[str, str]]:
    """One row per parameter: estimate, standard error and what it means in plain words."""
    unit = time_unit
    per_year = 365.25 / DAYS_PER_UNIT.get(unit, 7.0)
    rows = []
    p = purchases.params_
    rate = p["r"] / p["alpha"]
    meanings = {
        "r": "How differently customers buy: below 1, most buy rarely and a few buy very often.",
        "alpha": (
            f"Scale of the buying pace (in {unit}s). An active customer buys on average r/alpha = {rate:.3g} times "
            f"a {unit}, about {rate * per_year:.1f} times a year."
        ),
    }
    if "a" in p:
        drop = p["a"] / (p["a"] + p["b"])
        meanings["a"] = f"With b: the chance to leave after a purchase. On average a/(a+b) = {drop:.0%} per purchase."
        meanings["b"] = "With a: the larger b relative to a, the more loyal customers are after each purchase."
    if "s" in p:
        death = p["s"] / p["beta"]
        meanings["s"] = "How differently long customers stay: below 1, lifetimes vary a lot between customers."
        meanings["beta"] = (
            f"Scale of lifetimes (in {unit}s). On average a customer leaves at a rate s/beta = {death:.3g} per {unit}."
        )
    g = spend.params_
    if "p" in g:  # Gamma-Gamma; the mean spend it falls back to has only its mean
        cv = 1 / math.sqrt(g["p"])
        meanings["p"] = f"How steady one customer's spend is: purchases scatter about {cv:.0%} around their own mean."
        meanings["q"] = "How differently customers spend: the larger q, the more alike; below 1 the mean is undefined."
        meanings["gamma"] = (
            f"Scale of spend (currency units). Average spend per purchase over all customers: p·gamma/(q−1) = "
            f"{spend.mean_spend():,.2f}."
        )
    meanings["mean"] = "Expected spend per purchase of every customer (currency units): Gamma-Gamma was not fitted."
    for model, title in ((purchases, purchases.title), (spend, spend.title)):
        result = getattr(model, "result_", None)  # absent before fit
        errors = result.standard_errors if result is not None else {}
        for name in model.param_names:
            value = model.params_[name]
            error = errors.get(name)
            rows.append(
                {
                    "model": title,
                    "name": name,
                    "estimate": f"{value:.4g}",
                    "se": f"{error:.3g}" if error is not None else "–",
                    "meaning": meanings.get(name, ""),
                }
            )
    return rows


def model_fit(run: RunFolder, digest: CustomerDigest) -> dict[str, Any]:
    """Parameters with their meaning, and the charts that show how well the models fit the data."""
    try:
        purchases, spend = read_models(run)
    except ForecastError as exc:
        return {"available": False, "message": str(exc)}
    config = run.manifest.get("config", {})
    time_unit = str(run.manifest.get("time_unit", config.get("time_unit", "week")))
    horizon_months = int(run.manifest.get("horizon_months", config.get("horizon_months", 12)))
    period = period_transactions(digest, purchases)
    chart_list = [period_chart(period, purchases), *heatmap_charts(digest, purchases, time_unit, horizon_months)]
    spend_check = check_spend_model(digest, spend)
    chart_list += spend_check.charts
    correlation = spend_check.correlation
    return {
        "available": True,
        "purchase_title": MODEL_DESCRIPTIONS.get(purchases.name, (purchases.title, ""))[0],
        "purchase_text": MODEL_DESCRIPTIONS.get(purchases.name, ("", ""))[1],
        "spend_title": SPEND_DESCRIPTION[0],
        "spend_text": SPEND_DESCRIPTION[1],
        "parameters": parameter_rows(purchases, spend, time_unit),
        "fit_facts": fit_facts(run.manifest["models"], purchases, spend),
        "period": period_table(period),
        "charts": chart_list,
        "spend": spend_check.summary,
        "correlation": None if correlation is None else f"{correlation:.3f}",
        "correlation_failed": correlation is not None and abs(correlation) > FREQUENCY_SPEND_CORRELATION_LIMIT,
        "correlation_limit": f"{FREQUENCY_SPEND_CORRELATION_LIMIT:g}",
        "time_unit": time_unit,
    }


def period_chart(period: pd.DataFrame, purchases: PurchaseModel) -> Chart:
    """Bars of customers by number of repeat purchases (``period_transactions``): actual beside the model."""
    from forecast.report import charts  # matplotlib only when charts are drawn

    return Chart(
        "period_transactions",
        "How many customers made 0, 1, 2, ... repeat purchases in the observation period (grey), and how many "
        "the model expects (blue). Bars of similar height mean the model reproduces how often people buy.",
        Markup(
            charts.period_transactions(
                list(period.index), period["actual"].to_numpy(), period["model"].to_numpy(), purchases.title
            )
        ),
    )


def heatmap_charts(
    digest: CustomerDigest, purchases: PurchaseModel, time_unit: str, horizon_months: int
) -> list[Chart]:
    """Expected purchases over the horizon and P(alive) on a frequency by recency grid, for a customer as old as
    the oldest (T = max T).

    References
    ----------
    Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base analysis", Journal of
    Marketing Research 42(4): the frequency by recency view of the purchase model's predictions.
    """
    from forecast.report import charts

    frequencies, recencies, T_max = frequency_recency_grid(digest)
    f_grid, r_grid = np.meshgrid(frequencies, recencies, indexing="ij")
    T_grid = np.full(f_grid.size, T_max)
    horizon_units = horizon_months * DAYS_PER_MONTH / DAYS_PER_UNIT.get(time_unit, 7.0)
    expected = purchases.expected_purchases(horizon_units, f_grid.ravel(), r_grid.ravel(), T_grid).reshape(f_grid.shape)
    alive = purchases.p_alive(f_grid.ravel(), r_grid.ravel(), T_grid).reshape(f_grid.shape)
    expected_chart = Chart(
        "heatmap_expected_purchases",
        f"Expected purchases in the next {horizon_months} months for a customer first seen {T_max:.0f} "
        f"{time_unit}s ago, by how often they bought (up) and how recently (right). Frequent, recent buyers "
        "(top right) are expected to buy most; frequent buyers who stopped a while ago (top left) much less.",
        Markup(charts.heatmap(expected, frequencies, recencies, name="heatmap_expected_purchases",
                              title=f"Expected purchases, next {horizon_months} months", time_unit=time_unit,
                              colorbar_label="expected purchases (count)")),
        wide=False,
    )  # fmt: skip
    only_after_repeat = (
        " In this model customers can only leave after a repeat purchase, so those who never came back "
        "(bottom row) count as active."
    )
    alive_chart = Chart(
        "heatmap_p_alive",
        f"Probability that a customer first seen {T_max:.0f} {time_unit}s ago is still a customer (P(alive)). "
        "A long silence after frequent buying is the strongest sign that someone has left."
        + (only_after_repeat if purchases.name == "bgnbd" else ""),
        Markup(charts.heatmap(alive, frequencies, recencies, name="heatmap_p_alive",
                              title="Probability still active, P(alive)", time_unit=time_unit,
                              colorbar_label="P(alive) (probability, 0 to 1)", cmap="magma")),
        wide=False,
    )  # fmt: skip
    return [expected_chart, alive_chart]


@dataclass(frozen=True)
class SpendCheck:
    """How the spend model fits the repeat buyers: its charts, summary figures and the independence check."""

    charts: list[Chart]
    summary: dict[str, str]
    correlation: float | None  # of repeat buyers' frequency and average spend; None with too few of them


def check_spend_model(digest: CustomerDigest, spend: GammaGamma) -> SpendCheck:
    """Draw repeat buyers' average spend against the Gamma-Gamma density, and their frequency against their spend.

    Only customers with a repeat purchase and a positive average spend count (the data the model is fitted on);
    with two or fewer there is nothing to show.

    References
    ----------
    Fader & Hardie (2013), "The Gamma-Gamma model of monetary value": the density of the average spend, and
    the assumption that spend does not depend on frequency.
    """
    buyers = RepeatBuyers(digest.spend_frequency, digest.spend_values, digest.spend_customers)
    if buyers.count <= 2:
        return SpendCheck([], {}, None)
    # Every repeat buyer with the same average spend (or frequency): no correlation to show (the mean spend run).
    alike = np.ptp(buyers.spend) == 0 or np.ptp(buyers.frequency) == 0
    correlation = None if alike else buyers.correlation()
    summary = {
        "observed_mean": f"{buyers.mean_spend():,.2f}",
        "observed_median": f"{quantile_of_counts(buyers.customers, 0.5, buyers.spend):,.2f}",
        "model_mean": f"{spend.mean_spend():,.2f}",
        "buyers": f"{buyers.count:,}",
    }
    charts = [spend_fit_chart(buyers, spend)]
    if correlation is not None:
        charts.append(frequency_spend_chart(buyers, correlation))
    return SpendCheck(charts, summary, correlation)


@dataclass(frozen=True)
class RepeatBuyers:
    """The repeat buyers with a positive average spend: each distinct (frequency, spend) and its customers."""

    frequency: np.ndarray
    spend: np.ndarray
    customers: np.ndarray

    @property
    def count(self) -> int:
        """How many repeat buyers."""
        return int(self.customers.sum())

    def mean_spend(self) -> float:
        """Their mean average spend."""
        return float(self.spend @ self.customers / self.customers.sum())

    def correlation(self) -> float:
        """Pearson's correlation of frequency and average spend over the buyers (each counted as often as it
        stands for)."""
        covariance = np.cov(self.frequency, self.spend, fweights=self.customers)
        return float(covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1]))


def spend_fit_chart(buyers: RepeatBuyers, spend: GammaGamma) -> Chart:
    """Histogram of repeat buyers' average spend with the density the spend model implies for them."""
    from forecast.report import charts

    upper = quantile_of_counts(buyers.customers, 0.99, buyers.spend) * 1.1
    grid = np.linspace(upper / 400, upper, 400)
    density = spend.average_spend_density(grid, buyers.frequency, buyers.customers)
    return Chart(
        "spend_fit",
        "Average spend per purchase of customers who bought more than once (grey bars) and the distribution "
        "the spend model implies for them (blue line). A line that follows the bars means the spend model "
        "describes how much people spend.",
        Markup(charts.spend_fit(buyers.spend, buyers.customers, grid, density)),
    )


def frequency_spend_chart(buyers: RepeatBuyers, correlation: float) -> Chart:
    """Scatter of repeat buyers' frequency against their average spend, with the correlation."""
    from forecast.report import charts

    return Chart(
        "frequency_spend",
        "Each dot is a repeat buyer: how often they bought (right) and how much they spent per purchase (up). "
        "The spend model assumes these two are unrelated; a visible trend would break that assumption.",
        Markup(
            charts.frequency_spend(
                buyers.frequency, buyers.spend, buyers.customers, correlation, FREQUENCY_SPEND_CORRELATION_LIMIT
            )
        ),
    )


def fit_facts(recorded: dict[str, Any], purchases: PurchaseModel, spend: GammaGamma) -> list[str]:
    """One sentence per model: log-likelihood and what it was fitted on, from the manifest's ``models`` entry."""
    purchase_fit, spend_fit = recorded["purchases"], recorded["spend"]
    spend_likelihood = spend_fit.get("log_likelihood")  # null for the mean spend, which has none
    return [
        f"{purchases.title}: log-likelihood {purchase_fit.get('log_likelihood', float('nan')):,.2f} on "
        f"{purchase_fit.get('customers', 0):,} customers ({purchase_fit.get('unique_rows', 0):,} distinct "
        "histories).",
        f"{spend.title}: "
        + ("no likelihood, the mean of" if spend_likelihood is None else f"log-likelihood {spend_likelihood:,.2f} on")
        + f" {spend_fit.get('customers', 0):,} repeat buyers with a positive average spend.",
    ]


def period_table(period: pd.DataFrame) -> Table:
    """The repeat-purchase buckets (``period_transactions``) as a table: actual customers and the model's count."""
    return Table(
        ["Repeat purchases", *period.index],
        [
            ["actual customers", *(f"{v:,.0f}" for v in period["actual"])],
            ["model (expected)", *(f"{v:,.1f}" for v in period["model"])],
        ],
        [False] + [True] * len(period),
        "Customers by number of repeat purchases",
    )


# --- backtest ------------------------------------------------------------------------------------------


def _plot_chart(run_dir: Path, name: str, file_name: Any) -> Chart | str:
    """A plot file next to backtest.json as an embedded image, or why it cannot be shown."""
    if not isinstance(file_name, str):
        return f"plot {name!r}: no file name"
    path = (run_dir / file_name).resolve()
    if path.parent != run_dir.resolve() or path.suffix.lower() not in PLOT_SUFFIXES:
        return f"plot {name!r}: {file_name} is not an .svg or .png file in the run folder"
    if not path.is_file():
        return f"plot {name!r}: {file_name} is missing"
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = BACKTEST_CAPTIONS.get(name, label(name))
    return Chart(name, caption, image_uri=f"data:{PLOT_SUFFIXES[path.suffix.lower()]};base64,{encoded}")


METHOD_ORDER = ["predictive", "heuristic"]
METRIC_ORDER = [
    "predicted_revenue", "total_revenue_error", "rmse_revenue", "normalized_gini", "predicted_purchases",
    "mae_purchases", "rmse_purchases", "mae_revenue", "spearman_revenue", "top20_capture",
]  # fmt: skip
#: What the model-selection table shows of each model's validation score.
SELECTION_COLUMNS = ["per_1000_customers", "behind_best_per_1000", "standard_error_per_1000", "predicted_purchases"]
PLOT_ORDER = {"conditional_expectation": 0, "tracking": 1, "deciles": 2}
BACKTEST_CAPTIONS = {
    "conditional_expectation": "Holdout purchases by calibration-period purchases: what customers who bought 0, 1, "
    "2, ... times before the cut-off actually bought afterwards, against what each method predicted.",
    "tracking": "Cumulative purchases week by week, actual vs model, over the calibration and holdout periods. "
    "The line after the vertical mark is a true forecast: the model never saw those weeks.",
    "deciles": "Customers ranked by predicted value and cut into ten groups: predicted vs actual holdout value per "
    "group. A good method's actual values fall from left to right.",
}


def _decile_chart(methods: dict[str, Any]) -> Chart | None:
    """Draw predicted vs actual by decile from the methods' decile tables, when they have a recognisable shape."""
    predicted: dict[str, np.ndarray] = {}
    actual: np.ndarray | None = None
    labels: list[str] = []
    unit = "value"
    for method, metrics in methods.items():
        deciles = metrics.get("deciles") if isinstance(metrics, dict) else None
        if not deciles:
            continue
        frame = pd.DataFrame(deciles)
        predicted_cols = [c for c in frame.columns if "predicted" in str(c)]
        actual_cols = [c for c in frame.columns if "actual" in str(c)]
        if not predicted_cols or not actual_cols:
            continue
        predicted[method] = frame[predicted_cols[0]].to_numpy(float)
        actual = frame[actual_cols[0]].to_numpy(float) if actual is None else actual
        unit = "revenue (currency units)" if "revenue" in str(predicted_cols[0]) else unit
        decile_cols = [c for c in frame.columns if "decile" in str(c)]
        labels = [str(v) for v in (frame[decile_cols[0]] if decile_cols else range(1, len(frame) + 1))]
    if actual is None or not predicted or any(len(v) != len(actual) for v in predicted.values()):
        return None
    from forecast.report import charts

    return Chart("backtest_deciles", BACKTEST_CAPTIONS["deciles"],
                 Markup(charts.decile_chart(labels, predicted, actual, unit)))  # fmt: skip


def records_table(records: dict[str, Any], key_label: str, caption: str) -> Table:
    """A table with one row per entry of a mapping of name -> record, keeping the records' plain values only."""
    rows = {
        str(name): {k: v for k, v in record.items() if not isinstance(v, dict | list)}
        for name, record in records.items()
        if isinstance(record, dict)
    }
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis(key_label).reset_index()
    return frame_table(frame, caption)


def winner_summary(winner: Any, overall: Any = None) -> tuple[str | None, list[list[str]]]:
    """The overall winner and the metric -> best method rows, from backtest.json's ``winner`` (and its
    ``overall_winner``, decided by the deciding scores; older files without it: the most metrics won)."""
    if isinstance(winner, str):
        return winner, []
    if not isinstance(winner, dict):
        return None, []
    rows = [[label(metric), str(method) if method else "–"] for metric, method in winner.items()]
    if isinstance(overall, dict) and overall.get("method") and isinstance(overall.get("wins"), dict):
        decided_by = [label(str(m)) for m in overall.get("decided_by", [])]
        won = overall["wins"].get(overall["method"], 0)
        tie = sum(count == won for count in overall["wins"].values()) > 1
        text = (
            f"{overall['method']} (best on {won} of {len(decided_by)} deciding scores: {', '.join(decided_by)}"
            f"{'; a tie broken by the sum of its ranks' if tie else ''})"
        )
        return text, rows
    wins: dict[str, int] = {}
    for method in winner.values():
        if method:
            wins[str(method)] = wins.get(str(method), 0) + 1
    if not wins:
        return None, rows
    ranked = sorted(wins.items(), key=lambda item: -item[1])
    text = ", ".join(f"{method} on {count} of {len(winner)} metrics" for method, count in ranked)
    return f"{ranked[0][0]} ({text})" if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else f"a tie ({text})", rows


def backtest(run: RunFolder) -> dict[str, Any]:
    """The backtest's summary, metrics table, winner, model choice and comparison, and plots, when a backtest ran."""
    choice = run_model_choice(run.manifest.get("model_selection"))
    data = run.backtest
    if not isinstance(data, dict):
        return {"available": False, **choice}
    methods = data.get("methods", {}) if isinstance(data.get("methods"), dict) else {}
    winner, winner_rows = winner_summary(data.get("winner"), data.get("overall_winner"))
    comparison = data.get("model_comparison")
    plots = data.get("plots", {})
    chart_list, problems = backtest_plot_charts(run.path, plots if isinstance(plots, dict) else {})
    if not any("decile" in c.name for c in chart_list):
        decile = _decile_chart(methods)
        if decile is not None:
            chart_list.append(decile)
    return {
        "available": True,
        "facts": backtest_facts(data),
        "metrics": metrics_table(methods),
        "winner": winner,
        "winner_rows": winner_rows,
        "selection": selection_table(data.get("model_selection")),
        "comparison": (
            records_table(
                {name: _holdout_score_rounded(entry) for name, entry in comparison.items()},
                "model",
                "Purchase models fitted on the whole calibration period, with their "
                "holdout scores (information: the choice was made before the calibration end)",
            )
            if isinstance(comparison, dict) and comparison
            else None
        ),
        "charts": chart_list,
        "problems": problems,
        "warnings": [str(w) for w in data.get("warnings", [])] if isinstance(data.get("warnings"), list) else [],
        **choice,
    }


def run_model_choice(selection: Any) -> dict[str, Any]:
    """The run's own purchase-model choice (manifest.json's ``model_selection``): a sentence and the score table."""
    if not isinstance(selection, dict) or not selection.get("chosen"):
        return {"run_choice": None, "run_selection": None}
    configured = selection.get("configured")
    how = "chosen by" if configured == "auto" else "configured; checked by"
    sentence = (
        f"This run uses {selection['chosen']} ({how} a validation on the data up to {selection.get('cutoff')}): "
        f"{selection.get('reason', '')}"
    )
    return {"run_choice": sentence, "run_selection": selection_table(selection)}


def selection_table(selection: Any) -> Table | None:
    """Every purchase model's internal-validation score (``model_selection.scores``), when the file has them."""
    if not isinstance(selection, dict) or not isinstance(selection.get("scores"), dict):
        return None
    rows = {
        str(name): {k: _one_decimal(entry.get(k), k) for k in SELECTION_COLUMNS} if "per_1000_customers" in entry else
        {"error": entry.get("error")}
        for name, entry in selection["scores"].items()
        if isinstance(entry, dict)
    }  # fmt: skip
    if not rows:
        return None
    windows = selection.get("windows")
    windows = windows if isinstance(windows, list) else []
    scored = ", ".join(f"{w.get('fit_through')} .. {w.get('scored_through')}" for w in windows if isinstance(w, dict))
    caption = (
        f"Model choice: each model refitted on the data up to the start of the validation window and scored on the "
        f"purchases in it ({scored or 'no window'}; higher log-likelihood is better)"
    )
    return records_table(rows, "model", caption)


def _holdout_score_rounded(entry: Any) -> Any:
    """A model-comparison entry with its holdout log-likelihood per 1,000 customers to one decimal."""
    if not isinstance(entry, dict):
        return entry
    key = "holdout_log_likelihood_per_1000"
    return {**entry, key: _one_decimal(entry[key], key)} if key in entry else entry


def _one_decimal(value: Any, column: str) -> Any:
    """A score per 1,000 customers with one decimal (the table's own format would round -582.9 to -583)."""
    return f"{value:,.1f}" if isinstance(value, float) and "per_1000" in column else value


def backtest_facts(data: dict[str, Any]) -> list[list[str]]:
    """The split, the customers, the purchase model used and why, and the actual holdout totals, as label/value rows."""
    facts = [[label(k), format_value(data[k], k)] for k in ("calibration_end", "holdout_end", "customers") if k in data]
    used = data.get("purchase_model", {})
    if isinstance(used, dict) and used.get("used"):
        facts.append(["Purchase model", f"{used['used']} (configured: {used.get('configured', '?')})"])
        if used.get("reason"):
            facts.append(["Why this model", str(used["reason"])])
    actual = data.get("actual", {})
    if isinstance(actual, dict):
        for key, value in actual.items():
            name = "Top-20% capture of a perfect ranking" if key == "top20_capture" else f"Actual holdout {key}"
            facts.append([name, format_value(value, key)])
    facts.extend(holdout_interval_facts(data.get("holdout_interval")))
    return facts


def holdout_interval_facts(interval: Any) -> list[list[str]]:
    """Per holdout total, the predictive interval and whether the realised total fell in it (backtest.json's
    ``holdout_interval``), as label/value rows; none without one."""
    if not isinstance(interval, dict) or not isinstance(interval.get("level"), int | float):
        return []
    rows = []
    for key in ("purchases", "revenue"):
        total = interval.get(key)
        if isinstance(total, dict) and all(isinstance(total.get(k), int | float) for k in ("lower", "upper")):
            verdict = "covered the actual total" if total.get("covered") else "missed the actual total"
            rows.append(
                [
                    f"{interval['level']:.0%} predictive interval of holdout {key}",
                    f"{format_value(total['lower'], key)} – {format_value(total['upper'], key)}: {verdict}",
                ]
            )
    return rows


def metrics_table(methods: dict[str, Any]) -> Table | None:
    """One row per method (predictive and heuristic first), the metrics in ``METRIC_ORDER`` then any others."""
    order = sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))
    flat_methods = {}
    for name in order:
        if isinstance(methods[name], dict):
            entry = {**{f"predicted_{k}": v for k, v in methods[name].get("predicted", {}).items()}, **methods[name]}
            known = [k for k in METRIC_ORDER if k in entry]
            flat_methods[name] = {k: entry[k] for k in known + [k for k in entry if k not in known]}
            error = flat_methods[name].get("total_revenue_error")
            if isinstance(error, int | float):  # a signed share, which the money format would show as 0.22
                flat_methods[name]["total_revenue_error"] = f"{error:+.1%}"
    if not flat_methods:
        return None
    return records_table(
        flat_methods,
        "method",
        "Holdout accuracy per method: the deciding scores first (total revenue error and RMSE, lower is better; "
        "normalized Gini, higher is better), then the information ones",
    )


def backtest_plot_charts(run_dir: Path, plots: dict[str, Any]) -> tuple[list[Chart], list[str]]:
    """The plot files backtest.json lists, in ``PLOT_ORDER``, and why any of them cannot be shown."""
    chart_list: list[Chart] = []
    problems: list[str] = []
    for name, file_name in sorted(plots.items(), key=lambda item: PLOT_ORDER.get(str(item[0]), len(PLOT_ORDER))):
        chart = _plot_chart(run_dir, str(name), file_name)
        if isinstance(chart, Chart):
            chart_list.append(chart)
        else:
            problems.append(chart)
    return chart_list, problems


# --- segments and budget -------------------------------------------------------------------------------


def segments_section(run: RunFolder) -> dict[str, Any]:
    """Per segmentation: the segment table, the predictive vs heuristic chart, and the budget columns."""
    table = run.segments
    if table is None or table.empty or "segmentation" not in table.columns:
        return {"available": False, "groups": []}
    bounds = _interval_columns(table)
    everyone = table[table["segmentation"] == ALL_SEGMENTATION]
    budget_columns = [
        c for c in table.columns if any(w in c for w in ("cac", "acquisition", "new_customer", "pays_back", "payback"))
    ]
    budget_columns += ["biddable"] if "biddable" in table.columns else []
    risk_columns = [c for c in table.columns if "risk" in c]
    comparison = matched_comparison(run.manifest)
    has_costs = comparison is not None and isinstance(comparison.get("net"), dict)
    gross_only = [] if has_costs else [c for c in NET_SEGMENT_COLUMNS if c in table.columns]
    groups = []
    for segmentation, rows in table[table["segmentation"] != ALL_SEGMENTATION].groupby("segmentation", sort=False):
        shown = pd.concat([rows, everyone]).drop(columns=["segmentation", *gross_only])
        main_columns = [c for c in SEGMENT_COLUMN_ORDER if c in shown.columns]
        main_columns += [c for c in (bounds or ()) if c not in main_columns]
        main_columns += [c for c in shown.columns if c not in main_columns + budget_columns + risk_columns]
        chart = segment_clv_chart(rows, str(segmentation), bounds, run.manifest)
        budget = None
        if budget_columns or risk_columns:
            budget = frame_table(shown[["segment", *budget_columns, *risk_columns]], total_row=True)
        groups.append(
            {
                "name": str(segmentation),
                "table": frame_table(shown[main_columns], total_row=True),
                "chart": chart,
                "budget": budget,
            }
        )
    config = run.manifest.get("config", {})
    budget_config = config.get("budget", {}) if isinstance(config.get("budget"), dict) else {}
    level = config.get("ci_level")
    intervals = bounds is not None and bool(np.isfinite(table[list(bounds)].to_numpy(float)).all())
    return {
        "available": True,
        "groups": groups,
        "ci_level": f"{level:.0%}" if isinstance(level, float) else "",
        "target_ltv_to_cac": format_value(budget_config.get("target_ltv_to_cac")),
        "p_alive_threshold": format_value(budget_config.get("p_alive_threshold"), "p_alive"),
        "has_interval": intervals,
        "costs_note": (
            f"With {costs_text(comparison['net'])}, the new-customer CLV, the maximum acquisition cost and the payback "
            "are net of them (the first purchase included); the CLV totals beside them are gross."
            if has_costs and comparison is not None
            else ""
        ),
        "has_budget": bool(budget_columns),
        "has_risk": bool(risk_columns),
    }


def segment_clv_chart(
    rows: pd.DataFrame, segmentation: str, bounds: tuple[str, str] | None, manifest: dict[str, Any]
) -> Chart | None:
    """Predictive beside heuristic CLV totals per segment of one segmentation: over the same discounted months
    when the table has the matched columns (``matched_segment_chart``), else over the horizon and the lifespan with
    the interval of the predictive total when every segment has a finite one; None when the table lacks them."""
    if {"clv_matched_total", "clv_heuristic_matched_total"} <= set(rows.columns):
        return matched_segment_chart(rows, segmentation, manifest)
    if not {"clv_total", "clv_heuristic_total"} <= set(rows.columns):
        return None
    from forecast.report import charts

    lower = rows[bounds[0]].to_numpy(float) if bounds else None
    upper = rows[bounds[1]].to_numpy(float) if bounds else None
    if lower is None or upper is None or not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        lower = upper = None
    horizon = manifest.get("horizon_months", "?")
    lifespan = years(manifest.get("heuristic", {}).get("lifespan_years"))
    return Chart(
        f"segment_clv_{segmentation}",
        f"Predictive CLV (next {horizon} months) beside the heuristic ({lifespan}-year lifespan, undiscounted: not "
        f"like for like) per {segmentation}" + (", with the interval of the predictive total." if lower is not None
                                                else "."),
        Markup(charts.segment_bars(rows["segment"].astype(str).tolist(), rows["clv_total"].to_numpy(float),
               rows["clv_heuristic_total"].to_numpy(float), name=f"segment_clv_{segmentation}",
               title=f"Predictive vs heuristic CLV by {segmentation}",
               predictive_label=f"predictive, next {horizon} months",
               heuristic_label=f"heuristic, {lifespan}-year lifespan", lower=lower, upper=upper)),
    )  # fmt: skip


def matched_segment_chart(rows: pd.DataFrame, segmentation: str, manifest: dict[str, Any]) -> Chart:
    """Predictive beside heuristic CLV totals per segment over the same months, discounted the same way."""
    from forecast.report import charts

    comparison = matched_comparison(manifest)
    span = int(rows["matched_span_months"].iloc[0]) if "matched_span_months" in rows.columns else "?"
    basis = _basis(comparison) if comparison else f"the same {span} months"
    return Chart(
        f"segment_clv_{segmentation}",
        f"Predictive beside heuristic CLV per {segmentation}, both over {basis} (the heuristic's lifespan).",
        Markup(charts.segment_bars(rows["segment"].astype(str).tolist(), rows["clv_matched_total"].to_numpy(float),
               rows["clv_heuristic_matched_total"].to_numpy(float), name=f"segment_clv_{segmentation}",
               title=f"Predictive vs heuristic CLV by {segmentation}, {span} months",
               predictive_label=f"predictive, {span} months", heuristic_label=f"heuristic, {span} months")),
    )  # fmt: skip


# --- drift, quality, about -----------------------------------------------------------------------------


DRIFT_DATES = ("previous_as_of", "as_of", "days_apart")


def _change_table(rows: dict[str, Any], key_label: str, caption: str) -> Table | None:
    """Previous/current/change rows (drift totals or parameters) as a table, relative changes as percentages."""
    records = {k: v for k, v in rows.items() if isinstance(v, dict)}
    if not records:
        return None
    frame = pd.DataFrame.from_dict(records, orient="index").rename_axis(key_label).reset_index()
    if key_label != "parameter":  # parameters keep the papers' symbols
        frame[key_label] = [label(str(k)) for k in frame[key_label]]
    return frame_table(frame.rename(columns={"z": "change_in_standard_errors"}), caption)


def drift_section(run: RunFolder) -> dict[str, Any]:
    """The manifest's drift against the previous run (totals, parameters, segments, tier moves, customer flows).

    Each part is shown when it has the layout ``forecast.batch.drift.drift_document`` writes (docs/operations.md,
    "Drift"); anything else in the entry is shown as plain tables under "Other drift figures".
    """
    drift = run.manifest.get("drift")
    previous = run.manifest.get("previous_run")
    if not drift:
        return {"available": False, "previous": previous if isinstance(previous, str) else None}
    if not isinstance(drift, dict):
        return {"available": True, "facts": [], "tables": mapping_tables(drift, ""), "warnings": [], "chart": None}
    facts = [[label(k), format_value(drift[k], k)] for k in DRIFT_DATES if k in drift]
    tables: list[Table] = []
    handled = {*DRIFT_DATES, "warnings", "thresholds"}
    totals = drift.get("totals")
    if isinstance(totals, dict) and (table := _change_table(totals, "quantity", "Totals, previous vs current")):
        tables.append(table)
        handled.add("totals")
    if isinstance(drift.get("parameters"), dict):
        tables += drift_parameter_tables(drift["parameters"])
        handled.add("parameters")
    segments = drift_segment_frame(drift.get("segments"))
    chart = None
    if segments is not None:
        tables.append(frame_table(segments, "CLV per segment, previous vs current"))
        chart = drift_tiers_chart(segments, drift)
        handled.add("segments")
    moves = tier_moves(drift.get("tiers"))
    if moves is not None:
        tables.append(moves[0])
        facts += moves[1]
        handled.add("tiers")
    flows = drift.get("customers")
    if isinstance(flows, dict):
        facts += [[f"{label(k)} customers", format_value(v, k)] for k, v in flows.items()]
        handled.add("customers")
    rest = {k: v for k, v in drift.items() if k not in handled}
    if rest:
        tables.extend(mapping_tables(rest, "Other drift figures"))
    warnings = [str(w) for w in drift.get("warnings", [])] if isinstance(drift.get("warnings"), list) else []
    return {"available": True, "facts": facts, "tables": tables, "warnings": warnings, "chart": chart}


def drift_parameter_tables(parameters: dict[str, Any]) -> list[Table]:
    """One table per model role (purchases, spend): each parameter's previous and current value and its z."""
    tables = []
    for role, entry in parameters.items():
        if isinstance(entry, dict) and isinstance(entry.get("params"), dict):
            caption = f"Parameters of the {role} model ({entry.get('model', '?')})"
            if not entry.get("comparable", True):
                caption += f": changed from {entry.get('previous_model')}, not compared"
            table = _change_table(entry["params"], "parameter", caption)
            if table is not None:
                tables.append(table)
    return tables


def drift_segment_frame(segments: Any) -> pd.DataFrame | None:
    """The drift's per-segment rows as a frame, or None when they are not a non-empty list of records.

    Segmentations get their current names (``segmentation_name``): runs written before the value tiers were named
    ``value_tier`` recorded them as ``segment``.
    """
    if isinstance(segments, list) and segments and all(isinstance(r, dict) for r in segments):
        frame = pd.DataFrame(segments)
        if "segmentation" in frame.columns:
            frame["segmentation"] = [segmentation_name(str(name)) for name in frame["segmentation"]]
        return frame
    return None


def drift_tiers_chart(segments: pd.DataFrame, drift: dict[str, Any]) -> Chart | None:
    """Bars of each value tier's predictive CLV in the previous and the current run, when the rows have them."""
    if not {"segmentation", "segment", "clv_previous", "clv_current"} <= set(segments.columns):
        return None
    tiers = segments[segments["segmentation"].astype(str) == VALUE_TIERS]
    if not len(tiers):
        return None
    from forecast.report import charts

    previous_as_of, as_of = drift.get("previous_as_of", "?"), drift.get("as_of", "?")
    return Chart(
        "drift_segments",
        f"Predictive CLV per value tier in the previous run (as of {previous_as_of}) and in this one (as of {as_of}).",
        Markup(
            charts.paired_bars(
                tiers["segment"].astype(str).tolist(),
                tiers["clv_previous"].to_numpy(float),
                tiers["clv_current"].to_numpy(float),
                name="drift_segments",
                title="Predictive CLV by value tier: previous vs current run",
                first_label=f"previous, as of {previous_as_of}",
                second_label=f"current, as of {as_of}",
            )
        ),
    )


def tier_moves(tiers: Any) -> tuple[Table, list[list[str]]] | None:
    """The tier-transition counts as a table, and how many customers moved up, down or stayed as facts.

    None when ``tiers`` lacks labels_from, labels_to or counts.
    """
    if not isinstance(tiers, dict) or not {"labels_from", "labels_to", "counts"} <= set(tiers):
        return None
    frame = pd.DataFrame(tiers["counts"], index=tiers["labels_from"], columns=tiers["labels_to"])
    frame = frame.rename_axis("previous tier").reset_index()
    table = frame_table(frame, "Customers moving between value tiers (rows: previous tier, columns: now)")
    moves = {k: tiers[k] for k in ("moved", "moved_up", "moved_down", "stayed") if k in tiers}
    facts = [[f"Customers who {label(k).lower()} tier" if k != "stayed" else "Customers who stayed in their tier",
              format_value(v)] for k, v in moves.items()]  # fmt: skip
    return table, facts


def quality_section(run: RunFolder) -> dict[str, Any]:
    """The run's warnings and the input facts."""
    input_facts = run.manifest.get("input", {})
    facts = []
    for key in ("rows", "customers_in_log", "customers", "first_timestamp", "last_timestamp"):
        if key in input_facts:
            facts.append([label(key), format_value(input_facts[key], key)])
    return {"warnings": [str(w) for w in run.manifest.get("warnings", [])] + run.notes, "facts": facts}


def about_section(run: RunFolder) -> dict[str, Any]:
    """Where the data came from and how the run was configured."""
    manifest = run.manifest
    config = manifest.get("config", {})
    input_facts = manifest.get("input", {})
    items = [
        ["As of", str(manifest.get("as_of", "?"))],
        ["Input", ", ".join(str(p) for p in input_facts.get("paths", [])) or "?"],
        ["Input checksum (SHA-256)", str(input_facts.get("sha256", "?"))[:16] + "…"],
        ["Time unit", str(manifest.get("time_unit", config.get("time_unit", "?")))],
        ["Forecast horizon", f"{manifest.get('horizon_months', config.get('horizon_months', '?'))} months"],
        ["Monthly discount rate", format_value(config.get("monthly_discount_rate"), "discount_rate")],
        ["Gross margin", format_value(config.get("margin"), "margin_share")],
        ["Purchase model", str(config.get("purchase_model", "?"))],
        ["Heuristic lifespan", f"{years(manifest.get('heuristic', {}).get('lifespan_years'))} years"],
    ]
    versions = manifest.get("versions", {})
    if versions:
        items.append(["Versions", ", ".join(f"{k} {v}" for k, v in versions.items())])
    return {"rows": items}


# --- rendering -----------------------------------------------------------------------------------------


def render_report(run: RunFolder, digest: CustomerDigest) -> str:
    """The report's HTML for a run folder that has been read, and its customers' digest."""
    environment = Environment(
        loader=PackageLoader("forecast.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template(TEMPLATE_NAME)
    return template.render(
        sections=SECTIONS,
        title=f"Customer lifetime value report, as of {run.manifest.get('as_of', '?')}",
        headline=headline(run, digest),
        fit=model_fit(run, digest),
        backtest=backtest(run),
        segments=segments_section(run),
        drift=drift_section(run),
        quality=quality_section(run),
        about=about_section(run),
    )


def build_report(
    run_dir: str | Path, customers: pd.DataFrame | None = None, digest: CustomerDigest | None = None
) -> Path:
    """Write ``report.html`` into a run folder from the folder's own files, and return its path.

    Parameters
    ----------
    run_dir
        A folder written by ``forecast run`` (manifest.json, customers.parquet, segments.csv and, when a
        backtest ran, backtest.json with its plot files).
    customers
        The run's per-customer table (the rows of customers.parquet; indexed by customer_id or not), when
        the caller holds it in memory: the file is then not read back. ``None`` reads customers.parquet.
    digest
        What the report draws of the customers (``CustomerDigest``), when the caller has it (the Spark engine,
        from its compressed summary): no customer table is read at all.

    Returns
    -------
    pathlib.Path
        The written report.

    Raises
    ------
    ArtifactError
        The folder is not a finished run folder (missing or unreadable manifest or customer table).
    """
    if digest is None:
        run = read_report_run(run_dir, customers)
        digest = CustomerDigest.of_customers(run.customers)
    else:
        run = read_run(run_dir, with_customers=False)
    html = render_report(run, digest)
    target = run.path / REPORT_HTML
    partial = run.path / f".{REPORT_HTML}.partial-{os.getpid()}"
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, target)
    return target
