"""The last resort of the spend model: every customer's expected spend per purchase is the population mean."""

from __future__ import annotations

import math
from typing import Self, overload

import numpy as np
import pandas as pd

from forecast.data.compress import as_floats
from forecast.errors import FitError
from forecast.models.base import ArrayLike, FitResult, _like_input
from forecast.models.gamma_gamma import GammaGamma


class MeanSpend(GammaGamma):
    """Every customer's expected spend per purchase is one number: the repeat buyers' mean average spend.

    Gamma-Gamma's limit when customers are alike (q -> infinity at a fixed mean spend), where a customer's own
    purchases no longer move their forecast. Fitted where Gamma-Gamma cannot be (too few repeat buyers, all
    with the same average spend, a likelihood without a maximum); without repeat buyers, the mean amount of all
    purchases is taken. It has no likelihood, standard error or covariance, so CLV intervals are left empty.
    """

    name = "mean_spend"
    title = "mean spend"
    param_names = ("mean",)
    lifetimes_names = ("mean",)
    fitter_class = None
    objective = None

    def __init__(self) -> None:
        """No settings: the mean needs none."""
        super().__init__()

    def fit_unique(
        self, frequency: ArrayLike, monetary_value: ArrayLike, counts: ArrayLike, mean_per_purchase: float | None = None
    ) -> Self:
        """Take the mean average spend of the repeat buyers with a positive average spend.

        Parameters
        ----------
        frequency, monetary_value, counts
            Unique (repeat purchases, mean amount of the repeat purchases) rows and the customers each stands for.
        mean_per_purchase
            Mean amount of all purchases (currency units), taken when no repeat buyer has a positive average spend.

        Returns
        -------
        self

        Raises
        ------
        FitError
            No repeat buyer has a positive average spend and ``mean_per_purchase`` is not a positive number.
        """
        frequency, monetary_value, counts = as_floats(frequency), as_floats(monetary_value), as_floats(counts)
        usable = (frequency > 0) & (monetary_value > 0)
        buyers = float(counts[usable].sum())
        if buyers > 0:
            mean = float(counts[usable] @ monetary_value[usable]) / buyers
        elif mean_per_purchase is not None and math.isfinite(mean_per_purchase) and mean_per_purchase > 0:
            mean = float(mean_per_purchase)
        else:
            raise FitError(
                "No purchase has a positive amount, so there is no spend to forecast. Check the amount column."
            )
        self.result_ = FitResult(
            params={"mean": mean},
            standard_errors={"mean": None},
            covariance_log_params=None,
            log_likelihood=math.nan,
            converged=True,
            customers=int(buyers),
            unique_rows=int(np.count_nonzero(usable)),
        )
        return self

    @overload
    def expected_spend(self, frequency: pd.Series, monetary_value: ArrayLike) -> pd.Series: ...
    @overload
    def expected_spend(self, frequency: np.ndarray, monetary_value: ArrayLike) -> np.ndarray: ...
    def expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray | pd.Series:
        """The mean for every customer (currency units): a Series named ``expected_spend`` on ``frequency``'s index
        when ``frequency`` is a Series, else an array, as Gamma-Gamma's."""
        values = np.full(np.shape(np.asarray(frequency)), self.params_["mean"])
        return _like_input(values, frequency, "expected_spend")

    def average_spend_density(
        self, z: ArrayLike, frequency: ArrayLike, customers: ArrayLike | None = None
    ) -> np.ndarray:
        """NaN: the mean alone says nothing about how average spend is spread (no curve to draw)."""
        return np.full(np.shape(np.asarray(z, float)), np.nan)

    def mean_spend(self) -> float:
        """The fitted mean spend per purchase (currency units)."""
        return self.params_["mean"]
