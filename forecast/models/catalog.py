"""The models by their names, and fitting a run's models: what is fitted when the configured model cannot be.

Purchases: the configured model (bgnbd, mbgnbd, pareto); when its likelihood is highest at the edge where nobody
drops out, the NBD, the model without dropout (``fit_purchase_model``). Spend: Gamma-Gamma; when it cannot be
fitted, Gamma-Gamma with shrinkage, then the population mean (``fit_spend_model``). Each fallback says, in a
ForecastWarning, what failed, what was fitted instead and what that means for the forecast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from forecast.data.compress import (
    Histories,
    SpendHistories,
)
from forecast.errors import FitError, ForecastWarning
from forecast.models.base import ConvergenceFitError, PurchaseModel, _Model
from forecast.models.bgnbd import BetaGeo
from forecast.models.gamma_gamma import (
    GammaGamma,
    warn_if_spend_correlated,
)
from forecast.models.mbgnbd import ModifiedBetaGeo
from forecast.models.mean_spend import MeanSpend
from forecast.models.nbd import NBD
from forecast.models.pareto import (
    ParetoNBD,
)

#: The purchase models a config names (``purchase_model``), which model selection and the backtest compare.
PURCHASE_MODELS: dict[str, type[PurchaseModel]] = {m.name: m for m in (BetaGeo, ModifiedBetaGeo, ParetoNBD)}
#: Every model a run can publish, by the name its JSON gives: the purchase models, the NBD they fall back to,
#: Gamma-Gamma and the mean spend it falls back to.
_PUBLISHED: tuple[type[_Model], ...] = (*PURCHASE_MODELS.values(), NBD, GammaGamma, MeanSpend)
MODELS: dict[str, type[_Model]] = {m.name: m for m in _PUBLISHED}

#: A dropout parameter (a, s) below this, where a fit ended or stopped, is the edge where nobody drops out.
NO_DROPOUT_BELOW = 1e-4
#: The NBD replaces such a fit when its log-likelihood is at most this much below the fit's (total, nats).
NBD_LIKELIHOOD_TOLERANCE = 1e-3
#: Shrinkage of the Gamma-Gamma fitted when the maximum-likelihood fit fails (``GammaGamma``'s ``shrinkage``).
SPEND_FALLBACK_SHRINKAGE = 0.01


def purchase_model(name: str, penalizer: float = 0.0) -> PurchaseModel:
    """A new, unfitted purchase model by its config name (bgnbd, mbgnbd, pareto), with lifetimes' penalizer."""
    return PURCHASE_MODELS[name](penalizer=penalizer)


def fit_models(
    summary: pd.DataFrame,
    model_name: str,
    histories: Histories | None = None,
    spend_histories: SpendHistories | None = None,
    *,
    purchase_penalizer: float = 0.0,
    spend_penalizer: float = 0.0,
) -> tuple[PurchaseModel, GammaGamma]:
    """Fit a purchase model (bgnbd, mbgnbd, pareto) and the spend model on a per-customer summary, with their
    fallbacks (``fit_purchase_model``, ``fit_spend_model``).

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
    purchase_penalizer, spend_penalizer
        lifetimes' ``penalizer_coef`` of the purchase and the spend model (config ``penalizer``).
    """
    histories = histories if histories is not None else Histories.from_summary(summary)
    spend_histories = spend_histories if spend_histories is not None else SpendHistories.from_summary(summary)
    purchases = fit_purchase_model(model_name, histories, purchase_penalizer)
    return purchases, fit_spend_model(spend_histories, spend_penalizer, mean_amount_per_purchase(summary))


# --- purchases ---------------------------------------------------------------------------------------------------


def fit_purchase_model(model_name: str, histories: Histories, penalizer: float = 0.0) -> PurchaseModel:
    """Fit a purchase model (bgnbd, mbgnbd, pareto) on a summary's unique (frequency, recency, T) histories, or the
    NBD when the data show no dropout.

    The data show no dropout when the fit ends, or its optimiser stops, with the dropout parameter (a; s for
    Pareto/NBD) below ``NO_DROPOUT_BELOW``, and the NBD, the model's limit there, is as likely (its
    log-likelihood at most ``NBD_LIKELIHOOD_TOLERANCE`` lower). The NBD is then published, with a ForecastWarning
    instead of the configured model's warnings.

    Raises
    ------
    FitError
        The configured model cannot be fitted and the NBD does not explain the data as well.
    """
    model = purchase_model(model_name, penalizer)
    failure: ConvergenceFitError | None = None
    ended_at: dict[str, float] | None
    log_likelihood: float | None
    with _held_warnings() as held:
        try:
            _fit_on(model, histories)
            ended_at, log_likelihood = model.params_, model.log_likelihood_
        except ConvergenceFitError as exc:
            failure, ended_at, log_likelihood = exc, exc.stopped_at, exc.log_likelihood
    nbd = _nbd_as_likely(model, ended_at, log_likelihood, histories, penalizer)
    if nbd is None:
        _issue(held)
        if failure is not None:
            raise failure
        return model
    warnings.warn(_no_dropout_message(model, ended_at, failure is not None, nbd), ForecastWarning, stacklevel=2)
    return nbd


def _fit_on(model: PurchaseModel, histories: Histories) -> PurchaseModel:
    rows = histories.rows
    return model.fit_unique(rows[:, 0], rows[:, 1], rows[:, 2], histories.counts)


def _nbd_as_likely(
    model: PurchaseModel,
    ended_at: dict[str, float] | None,
    log_likelihood: float | None,
    histories: Histories,
    penalizer: float,
) -> NBD | None:
    """The NBD fitted on the histories, if the model's fit ran off to no dropout and the NBD is as likely."""
    dropout = model.dropout_param
    if dropout is None or ended_at is None or not ended_at[dropout] < NO_DROPOUT_BELOW:
        return None
    nbd = NBD(penalizer=penalizer)
    try:
        _fit_on(nbd, histories)
    except FitError:
        return None
    if log_likelihood is not None and nbd.log_likelihood_ < log_likelihood - NBD_LIKELIHOOD_TOLERANCE:
        return None  # another edge (a and b -> 0: some customers leave at once, the others never)
    return nbd


def _no_dropout_message(model: PurchaseModel, ended_at: dict[str, float] | None, stopped: bool, nbd: NBD) -> str:
    """What the data show, what was fitted instead and what it means."""
    assert model.dropout_param is not None and ended_at is not None
    where = "where its optimiser stopped" if stopped else "at its maximum"
    r, alpha = nbd.params_["r"], nbd.params_["alpha"]
    return (
        f"No visible dropout: the {model.title} likelihood is highest as {model.dropout_param} -> 0 "
        f"({model.dropout_param} = {ended_at[model.dropout_param]:.2g} {where}), so the model without dropout (NBD, "
        f"r = {r:.4g}, alpha = {alpha:.4g}) was fitted instead and is published as purchase model 'nbd'. P(alive) "
        "is 1 for everyone: each customer keeps buying at their own estimated rate. If customers do leave, the "
        "data do not show it yet (a longer history will); until then expected purchases and CLV are upper bounds."
    )


# --- spend ------------------------------------------------------------------------------------------------------


def fit_spend_model(
    spend_histories: SpendHistories, penalizer: float = 0.0, mean_per_purchase: float | None = None
) -> GammaGamma:
    """Fit Gamma-Gamma on a summary's unique (frequency, monetary_value) histories, or its fallbacks.

    When Gamma-Gamma cannot be fitted (no convergence, every repeat buyer with the same average spend, fewer than
    two repeat buyers), Gamma-Gamma with shrinkage (``SPEND_FALLBACK_SHRINKAGE``) is fitted if its mean spend is
    defined (q > 1), else ``MeanSpend``: every customer's expected spend is the repeat buyers' mean average spend
    (``mean_per_purchase`` without repeat buyers). A ForecastWarning says which. Warns when repeat buyers'
    frequency and average spend are correlated (Gamma-Gamma assumes independence).

    Parameters
    ----------
    spend_histories
        The summary's unique spend histories (``SpendHistories.from_summary``).
    penalizer
        lifetimes' ``penalizer_coef`` of Gamma-Gamma (config ``penalizer.spend``).
    mean_per_purchase
        Mean amount of all purchases (``mean_amount_per_purchase``), for the mean spend without repeat buyers.

    Raises
    ------
    FitError
        No purchase has a positive amount.
    """
    rows, counts = spend_histories.rows, spend_histories.counts
    try:
        with _held_warnings() as held:
            spend = GammaGamma(penalizer=penalizer).fit_unique(rows[:, 0], rows[:, 1], counts)
        _issue(held)
    except FitError as failure:
        spend = _spend_fallback(spend_histories, penalizer, mean_per_purchase, failure)
    if not isinstance(spend, MeanSpend):
        _warn_if_correlated(spend_histories)
    return spend


def _spend_fallback(
    spend_histories: SpendHistories, penalizer: float, mean_per_purchase: float | None, failure: FitError
) -> GammaGamma:
    """Gamma-Gamma with shrinkage if it has a mean spend, else the mean spend, with a ForecastWarning saying so."""
    rows, counts = spend_histories.rows, spend_histories.counts
    shrunk = GammaGamma(penalizer=penalizer, shrinkage=SPEND_FALLBACK_SHRINKAGE)
    try:
        with _held_warnings() as held:
            shrunk.fit_unique(rows[:, 0], rows[:, 1], counts)
        if shrunk.params_["q"] <= 1:
            raise FitError(f"its q = {shrunk.params_['q']:.3g} <= 1 leaves the mean spend undefined")
    except FitError as second:
        mean = MeanSpend().fit_unique(rows[:, 0], rows[:, 1], counts, mean_per_purchase)
        warnings.warn(_mean_spend_message(failure, second, mean), ForecastWarning, stacklevel=3)
        return mean
    _issue(held)
    warnings.warn(
        f"The Gamma-Gamma spend model could not be fitted ({_first_sentence(failure)}), so it was fitted with "
        f"shrinkage {SPEND_FALLBACK_SHRINKAGE:g} toward p = q = 1 and gamma = the mean average spend (published "
        f'as gamma_gamma with "shrinkage": {SPEND_FALLBACK_SHRINKAGE:g}). Spend forecasts lean toward the average '
        f"of all customers a little more than a maximum-likelihood fit would; mean spend per purchase "
        f"{shrunk.mean_spend():,.2f}.",
        ForecastWarning,
        stacklevel=3,
    )
    return shrunk


def _mean_spend_message(failure: FitError, second: FitError, mean: MeanSpend) -> str:
    """What failed, that every customer's expected spend is the mean, and what that means."""
    buyers = mean.result_.customers
    source = (
        f"the mean average spend of the {buyers:,} repeat buyer{'s' if buyers != 1 else ''}"
        if buyers
        else "the mean amount of all purchases (nobody bought twice with a positive amount)"
    )
    why, why_not_shrunk = _first_sentence(failure), _first_sentence(second)
    failed = (
        f"with or without shrinkage ({why})"
        if why_not_shrunk == why
        else f"({why}), nor with shrinkage ({why_not_shrunk})"
    )
    return (
        f"The Gamma-Gamma spend model could not be fitted {failed}. Every customer's expected spend per "
        f"purchase is {source}, "
        f"{mean.mean_spend():,.2f} (published as spend model 'mean_spend'): CLV ranks customers by their expected "
        "purchases alone, a customer's own average spend does not count, and the CLV intervals are left empty."
    )


def mean_amount_per_purchase(summary: pd.DataFrame) -> float | None:
    """Mean amount of all purchases (first ones included): revenue over purchases, None without a revenue column."""
    if "revenue" not in summary.columns or summary.empty:
        return None
    return mean_amount_of(float(summary["revenue"].sum()), float(summary["frequency"].sum()), len(summary))


def mean_amount_of(revenue: float, repeat_purchases: float, customers: float) -> float | None:
    """Mean amount of all purchases from the customers' totals (another engine adds them up where its customers
    are): revenue over repeat purchases plus one first purchase per customer; None without customers or when not
    finite."""
    if customers <= 0:
        return None
    mean = revenue / (repeat_purchases + customers)
    return mean if math.isfinite(mean) else None


def _warn_if_correlated(spend_histories: SpendHistories) -> None:
    """The repeat buyers' frequency-spend correlation from their unique spend histories, each counted as often as
    it occurs (``warn_if_spend_correlated``)."""
    spend_rows, counts = spend_histories.rows, spend_histories.counts
    x, m = spend_rows[:, 0], spend_rows[:, 1]
    repeat = (x > 0) & (m > 0)
    if counts[repeat].sum() > 2:
        covariance = np.cov(x[repeat], m[repeat], fweights=counts[repeat])
        warn_if_spend_correlated(float(covariance[0, 1] / math.sqrt(covariance[0, 0] * covariance[1, 1])))


# --- warnings ----------------------------------------------------------------------------------------------------


@contextmanager
def _held_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the block's warnings instead of issuing them: a fit that is replaced leaves no trace."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _issue(held: list[warnings.WarningMessage]) -> None:
    """Issue warnings held by ``_held_warnings``, as they were first issued."""
    for w in held:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _first_sentence(error: Exception) -> str:
    """An error message's first sentence, without the advice that follows it."""
    return str(error).split(". ")[0].rstrip(".")
