"""The settings every CLV figure is valued with: horizon, monthly discounting, margin and the model's time unit.

Predictive CLV over H months, monthly discount rate d and margin m counts the expected purchases of month k,
E[X(t_k)] - E[X(t_{k-1})], at 1 / (1 + d)^k, where t_k is the end of month k in model time units (a month is
365.25 / 12 days). ``Valuation`` carries H, d, m and the length of the time unit together, so that the
functions that value purchases take one argument for them (docs/reference.md, "How the numbers are defined").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from forecast.config import DAYS_PER_MONTH

if TYPE_CHECKING:
    from forecast.config import RunConfig


@dataclass(frozen=True, kw_only=True)
class Valuation:
    """How future purchases are valued: over how many months, discounted at what rate, at what margin.

    Attributes
    ----------
    horizon_months
        Forecast horizon H in months.
    monthly_discount_rate
        Discount rate d per month (0.01 = 1%).
    margin
        Gross margin m as a fraction of spend.
    days_per_unit
        Days in one unit of model time (7.0 when the models count in weeks).
    cost_per_purchase, cost_per_active_month
        The cost of serving a customer (currency), subtracted after the margin in the net CLV
        (``forecast.value.costs``); 0 by default.

    Examples
    --------
    >>> Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0).month_ends()[1]
    4.348214285714286
    """

    horizon_months: int
    monthly_discount_rate: float
    margin: float
    days_per_unit: float
    cost_per_purchase: float = 0.0
    cost_per_active_month: float = 0.0

    @classmethod
    def from_config(cls, config: RunConfig) -> Valuation:
        """The valuation settings of a run configuration."""
        return cls(
            horizon_months=config.horizon_months,
            monthly_discount_rate=config.monthly_discount_rate,
            margin=config.margin,
            days_per_unit=config.days_per_unit,
            cost_per_purchase=config.costs.per_purchase,
            cost_per_active_month=config.costs.per_active_month,
        )

    @property
    def has_costs(self) -> bool:
        """Whether serving a customer costs anything, so that the net CLV differs from the gross."""
        return self.cost_per_purchase > 0 or self.cost_per_active_month > 0

    def month_ends(self) -> np.ndarray:
        """Times t_0 = 0, t_1, ..., t_H of the month ends over the horizon, in model time units."""
        return np.arange(self.horizon_months + 1) * DAYS_PER_MONTH / self.days_per_unit

    def discount_factors(self) -> np.ndarray:
        """1 / (1 + d)^k for the months k = 1..H."""
        return 1.0 / (1.0 + self.monthly_discount_rate) ** np.arange(1, self.horizon_months + 1)
