"""The customers' own randomness: exact for a Poisson buyer, and equal to simulating every customer's whole future."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecast.config import load_config
from forecast.data.compress import Histories, SpendHistories
from forecast.data.ingest import read_transactions
from forecast.data.summary import summarize
from forecast.models import BetaGeo, MeanSpend, ParetoNBD, fit_models
from forecast.models.nbd import NBD
from forecast.value.process import Periods, customer_variances, predictive_interval
from forecast.value.valuation import Valuation
from tests.conftest import model_with_params
from tests.value.simulated_futures import predictive_totals

WEEK = 7.0


@pytest.fixture(scope="module")
def sample_summary():
    config = load_config(Path(__file__).parents[2] / "configs" / "cdnow_sample.yaml")
    assert config.as_of is not None
    return summarize(read_transactions(config.data).connection, config.as_of, WEEK)


def test_a_poisson_buyer_with_a_fixed_spend_has_the_poisson_variance(sample_summary):
    """An NBD whose rate is known (r and alpha huge: 0.5 a week) and a fixed spend of 20: over 12 months discounted at
    1%, Var A = sum_k w_k^2 x 0.5 x month on average over the customers to 3% (each customer's estimate varies by
    about 3% between seeds) and Var V = (margin x 20)^2 Var A."""
    summary = sample_summary.iloc[:50]
    purchases = model_with_params(NBD, {"r": 1e9, "alpha": 2e9})
    spend = MeanSpend().fit_unique(np.array([1.0]), np.array([20.0]), np.array([1.0]))
    valuation = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=WEEK)
    periods = Periods.months(valuation)
    variance = customer_variances(
        purchases, spend, Histories.from_summary(summary), SpendHistories.from_summary(summary), periods, 0.3, seed=1
    )
    exact = (periods.weights**2 * 0.5 * np.diff(periods.ends)).sum()
    assert variance["purchases"].mean() == pytest.approx(exact, rel=0.03)
    np.testing.assert_allclose(variance["purchases"], exact, rtol=0.15)
    np.testing.assert_allclose(variance["value"], (0.3 * 20.0) ** 2 * variance["purchases"], rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto"])
def test_the_summed_variances_equal_the_spread_of_whole_simulated_futures(sample_summary, model):
    """On the CDNOW sample, 39 weeks ahead at the fit: the summed per-customer variances of purchases and revenue
    against the variance of 3,000 totals of every customer's simulated future (purchases, dropout and Gamma spend
    per purchase; an independent simulation), within 12% (the sample variance's spread at 3,000 heavy-tailed
    totals)."""
    purchases, spend = fit_models(sample_summary, model)
    histories, spend_histories = Histories.from_summary(sample_summary), SpendHistories.from_summary(sample_summary)
    variance = customer_variances(purchases, spend, histories, spend_histories, Periods.single(39.0), 1.0, seed=3)
    totals = predictive_totals(sample_summary, purchases, spend, 39.0, draws=3_000, seed=4, parameter_uncertainty=False)
    assert variance["purchases"].sum() == pytest.approx(totals["purchases"].var(), rel=0.12)
    assert variance["value"].sum() == pytest.approx(totals["revenue"].var(), rel=0.12)


def test_the_predictive_interval_widens_the_parameter_draws_by_the_customers_spread():
    """With no parameter spread, the interval is the normal's: +-1.645 sd at 90%; with no customers' spread, the
    draws' quantiles; never below 0."""
    flat = np.full((1, 4_000), 100.0)
    lower, upper = predictive_interval(flat, np.array([25.0]), 0.9, seed=0)
    assert lower[0] == pytest.approx(100 - 1.645 * 5, abs=0.3) and upper[0] == pytest.approx(100 + 1.645 * 5, abs=0.3)
    spread = np.linspace(0.0, 200.0, 4_001)[None, :]
    lower, upper = predictive_interval(spread, np.array([0.0]), 0.9)
    assert (lower[0], upper[0]) == pytest.approx((10.0, 190.0))
    assert predictive_interval(np.zeros((1, 100)), np.array([1e6]), 0.9)[0][0] == 0.0


@pytest.mark.parametrize(
    ("model_class", "params"),
    [
        (BetaGeo, {"r": 0.25, "alpha": 4.0, "a": 0.005, "b": 2.5}),
        (ParetoNBD, {"r": 0.5, "alpha": 10.0, "s": 0.005, "beta": 12.0}),
    ],
)
def test_a_dropout_that_underflows_to_zero_in_a_draw_means_never_dropping_out(sample_summary, model_class, params):
    """With a (BG/NBD) or s (Pareto/NBD) near 0 some simulated dropout probabilities or death rates are exactly 0:
    numpy's geometric refused p = 0 and 1 / 0 warned, which failed the run; now such a customer never drops out and
    every variance is finite."""
    purchases = model_with_params(model_class, params)
    spend = MeanSpend().fit_unique(np.array([1.0]), np.array([20.0]), np.array([1.0]))
    variance = customer_variances(
        purchases,
        spend,
        Histories.from_summary(sample_summary),
        SpendHistories.from_summary(sample_summary),
        Periods.single(39.0),
        1.0,
    )
    assert np.isfinite(variance.to_numpy()).all() and (variance.to_numpy() >= 0).all()
