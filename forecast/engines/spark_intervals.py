"""The CLV intervals on Spark, with the DuckDB engine's arithmetic (``forecast.value.uncertainty``).

The driver evaluates every unique history of the compressed summary once, as the DuckDB engine does: the CLV's two
factors with their gradients and spreads (``history_gradients``), the terms of the customers' own variance
(``value_variance_terms``, whose simulated moments depend on the unique histories and the seed only) and the
parameter draws (``draw_parameter_shifts``). Those small tables are joined to the summary on Spark by the history
keys; each executor then finds its customers' interval bounds and figures with ``figure_sums`` (every customer its
own bin), Spark adds the figures up per segment, and the driver expands the sums to the parameter draws
(``totals_under_draws``). The interval figures equal the DuckDB engine's: the same histories, the same seed, the same
functions; only the order of the additions differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.config import RunConfig
from forecast.value.process import VarianceTerms
from forecast.value.uncertainty import (
    ClvDraws,
    HistoryFigures,
    HistoryGradients,
    SumColumns,
    figure_sums,
    totals_under_draws,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame

#: The keys a customer's history row and spend history are looked up by (the summary's columns).
HISTORY_KEYS = ["frequency", "recency", "T"]
SPEND_KEYS = ["frequency", "monetary_value"]
#: Prefix of the internal columns the intervals add to the summary and the scores.
PREFIX = "__clv_interval_"
#: The per-customer interval columns of the output.
BOUNDS = ["clv_lower", "clv_upper"]


def history_table(figures: HistoryFigures) -> pd.DataFrame:
    """One row per unique history: its keys and what a customer of that history needs."""
    rows, gradients = figures.histories.rows, figures.gradients
    table = pd.DataFrame({"frequency": rows[:, 0].astype("int64"), "recency": rows[:, 1], "T": rows[:, 2]})
    table[f"{PREFIX}v"] = gradients.purchases
    for j, gradient in enumerate(gradients.purchases_gradient):
        table[f"{PREFIX}v_by_{j}"] = gradient
    table[f"{PREFIX}v_spread"] = gradients.purchases_spread
    if figures.terms is not None:
        table[f"{PREFIX}a"] = figures.terms.expected_a
        table[f"{PREFIX}a2"] = figures.terms.expected_a_squared
        table[f"{PREFIX}b"] = figures.terms.expected_b
    return table


def spend_table(figures: HistoryFigures) -> pd.DataFrame:
    """One row per unique spend history: its keys and what a customer of that history needs."""
    rows, gradients = figures.spend_histories.rows, figures.gradients
    table = pd.DataFrame({"frequency": rows[:, 0].astype("int64"), "monetary_value": rows[:, 1]})
    table[f"{PREFIX}s"] = gradients.spend
    for j, gradient in enumerate(gradients.spend_gradient):
        table[f"{PREFIX}s_by_{j}"] = gradient
    table[f"{PREFIX}s_spread"] = gradients.spend_spread
    if figures.terms is not None and figures.terms.inverse is not None and figures.terms.inverse_squared is not None:
        table[f"{PREFIX}inv"] = figures.terms.inverse
        table[f"{PREFIX}inv2"] = figures.terms.inverse_squared
    return table


@dataclass(frozen=True)
class FigureLayout:
    """What an executor needs, besides the looked-up columns, to find its customers' interval columns: small and
    picklable (the history tables travel by the join, not with the function)."""

    purchase_params: int
    spend_params: int
    margin: float
    variance: bool
    mean_spend: bool
    spend_shape: float

    @classmethod
    def of(cls, figures: HistoryFigures, margin: float) -> FigureLayout:
        """The layout of ``figures``' tables."""
        terms = figures.terms
        return cls(
            purchase_params=figures.columns.purchase_params,
            spend_params=figures.columns.spend_params,
            margin=margin,
            variance=terms is not None,
            mean_spend=terms is not None and terms.inverse is None,
            spend_shape=terms.spend_shape if terms is not None else float("nan"),
        )

    @property
    def columns(self) -> SumColumns:
        """The summed figures' columns."""
        return SumColumns(self.purchase_params, self.spend_params)

    def figure_names(self) -> list[str]:
        """The per-customer figure columns (summed per segment), the variance last when known."""
        names = [f"{PREFIX}figure_{k}" for k in range(self.columns.width)]
        return [*names, f"{PREFIX}variance"] if self.variance else names

    def customer_columns(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        """A batch's interval bounds (``BOUNDS``) and figures (``figure_names``), from the columns the join looked up.

        Raises
        ------
        RuntimeError
            A customer's history was not found in the driver's tables (a bug: every history was evaluated there).
        """
        looked_up = [name for name in batch.columns if name.startswith(PREFIX)]
        if batch[looked_up].isna().to_numpy().any():
            raise RuntimeError("A customer's history is missing from the intervals' history tables.")

        def column(name: str) -> np.ndarray:
            return batch[f"{PREFIX}{name}"].to_numpy(float)

        gradients = HistoryGradients(
            purchases=column("v"),
            purchases_gradient=[column(f"v_by_{j}") for j in range(self.purchase_params)],
            spend=column("s"),
            spend_gradient=[column(f"s_by_{j}") for j in range(self.spend_params)],
            purchases_spread=column("v_spread"),
            spend_spread=column("s_spread"),
        )
        own = np.arange(len(batch))  # every customer its own history and its own bin
        lower, upper = np.empty(len(batch)), np.empty(len(batch))
        figures = figure_sums(own, own, own, len(batch), gradients, self.margin, lower, upper)
        out = {"clv_lower": lower, "clv_upper": upper}
        out.update({name: figures[:, k] for k, name in enumerate(self.figure_names()[: self.columns.width])})
        if self.variance:
            terms = VarianceTerms(
                column("a"), column("a2"), column("b"),
                None if self.mean_spend else column("inv"), None if self.mean_spend else column("inv2"),
                self.spend_shape,
            )  # fmt: skip
            out[f"{PREFIX}variance"] = terms.value_variances(own, own, self.margin)
        return out


def with_history_figures(summary: SparkFrame, figures: HistoryFigures) -> SparkFrame:
    """The summary with every customer's history figures, looked up by its history keys (a join with the driver's
    tables, which Spark broadcasts when they are small)."""
    spark = summary.sparkSession
    histories = spark.createDataFrame(history_table(figures))
    spends = spark.createDataFrame(spend_table(figures))
    return summary.join(histories, HISTORY_KEYS, "left").join(spends, SPEND_KEYS, "left")


def at_risk_name(figure: str) -> str:
    """The column of a figure summed over the customers at risk only."""
    return f"{figure}_at_risk"


def draws_of_sums(figures: HistoryFigures, sums: pd.DataFrame, config: RunConfig) -> ClvDraws:
    """The ``ClvDraws`` of the segment table from the figures Spark summed per segment (``figure_names``, and each
    over the customers at risk, ``at_risk_name``), one row per (segmentation, segment); no per-customer bounds (the
    executors wrote them)."""
    layout = FigureLayout.of(figures, config.margin)
    names = layout.figure_names()[: layout.columns.width]
    everybody = sums[names].to_numpy(float)
    at_risk = sums[[at_risk_name(name) for name in names]].to_numpy(float)
    clv, spend, risk = totals_under_draws(everybody, at_risk, layout.columns, figures.shifts)
    variance = None
    if layout.variance:
        name = f"{PREFIX}variance"
        variance = pd.DataFrame({"clv": sums[name], "risk": sums[at_risk_name(name)]}, index=sums.index)
    return ClvDraws(
        ci_level=config.ci_level,
        customers=pd.DataFrame(columns=BOUNDS),
        clv_totals=pd.DataFrame(clv, index=sums.index),
        spend_totals=pd.DataFrame(spend, index=sums.index),
        risk_totals=None if risk is None else pd.DataFrame(risk, index=sums.index),
        new_customer_purchases=figures.shifts.new_customer_purchases,
        process_variance=variance,
        seed=config.seed,
    )
