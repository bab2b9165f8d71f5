"""The purchase models by their config names, and fitting a purchase model with the spend model."""

from __future__ import annotations

import pandas as pd

from forecast.data.compress import (
    Histories,
    SpendHistories,
)
from forecast.models.base import PurchaseModel
from forecast.models.bgnbd import BetaGeo
from forecast.models.gamma_gamma import (
    GammaGamma,
    fit_spend_model,
)
from forecast.models.mbgnbd import ModifiedBetaGeo
from forecast.models.pareto import (
    ParetoNBD,
)

PURCHASE_MODELS: dict[str, type[PurchaseModel]] = {m.name: m for m in (BetaGeo, ModifiedBetaGeo, ParetoNBD)}


def purchase_model(name: str) -> PurchaseModel:
    """A new, unfitted purchase model by its config name (bgnbd, mbgnbd, pareto)."""
    return PURCHASE_MODELS[name]()


def fit_models(
    summary: pd.DataFrame,
    model_name: str,
    histories: Histories | None = None,
    spend_histories: SpendHistories | None = None,
) -> tuple[PurchaseModel, GammaGamma]:
    """Fit a purchase model (bgnbd, mbgnbd, pareto) and Gamma-Gamma on a per-customer summary.

    Warns when repeat buyers' frequency and average spend are correlated (Gamma-Gamma assumes independence).

    Parameters
    ----------
    summary
        Output of ``forecast.data.summary.summarize`` (indexed by customer_id).
    model_name
        The purchase model's config name.
    histories, spend_histories
        The summary's unique histories, if already computed (``Histories.from_summary``,
        ``SpendHistories.from_summary``): the fits take their rows and counts.
    """
    histories = histories if histories is not None else Histories.from_summary(summary)
    spend_histories = spend_histories if spend_histories is not None else SpendHistories.from_summary(summary)
    return fit_purchase_model(model_name, histories), fit_spend_model(spend_histories)


def fit_purchase_model(model_name: str, histories: Histories) -> PurchaseModel:
    """Fit a purchase model (bgnbd, mbgnbd, pareto) on a summary's unique (frequency, recency, T) histories."""
    rows = histories.rows
    return purchase_model(model_name).fit_unique(rows[:, 0], rows[:, 1], rows[:, 2], histories.counts)
