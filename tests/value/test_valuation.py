"""Tests of forecast.value.valuation: month ends in model time units, discount factors, the run config's settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from forecast.config import load_config
from forecast.value.valuation import Valuation

CONFIGS = Path(__file__).parents[2] / "configs"


def test_month_is_365_25_over_12_days_in_model_units():
    """t_k = k x 365.25 / 12 days, divided by the days in one model time unit."""
    weeks = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    days = dataclasses.replace(weeks, horizon_months=1, days_per_unit=1.0)
    assert weeks.month_ends()[0] == 0.0
    assert weeks.month_ends()[-1] == pytest.approx(365.25 / 7)
    assert days.month_ends()[1] == pytest.approx(30.4375)


def test_discount_factors_are_one_over_one_plus_d_to_the_month():
    """Month k of the horizon is discounted by 1 / (1 + d)^k, from k = 1 (no discount at d = 0)."""
    valuation = Valuation(horizon_months=3, monthly_discount_rate=0.02, margin=1.0, days_per_unit=7.0)
    np.testing.assert_allclose(valuation.discount_factors(), [1 / 1.02, 1 / 1.02**2, 1 / 1.02**3], rtol=1e-15)
    undiscounted = dataclasses.replace(valuation, monthly_discount_rate=0.0)
    np.testing.assert_array_equal(undiscounted.discount_factors(), np.ones(3))


def test_valuation_of_a_run_config_takes_its_four_settings():
    """horizon_months, monthly_discount_rate and margin as configured; days_per_unit from the time unit."""
    config = load_config(CONFIGS / "cdnow.yaml").model_copy(update={"time_unit": "day", "margin": 0.25})
    assert Valuation.from_config(config) == Valuation(
        horizon_months=config.horizon_months,
        monthly_discount_rate=config.monthly_discount_rate,
        margin=0.25,
        days_per_unit=1.0,
    )


def test_valuation_is_frozen():
    """A valuation is a value: its settings cannot change once it is made."""
    valuation = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        valuation.margin = 0.5  # type: ignore[misc]
