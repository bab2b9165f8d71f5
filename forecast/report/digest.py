"""What the report draws of the customers, from their unique histories rather than one row per customer.

The report's customer figures (the active share, the customers by repeat purchases and by age, the repeat buyers'
average spend) depend on each customer's (x, t_x, T) history and (x, m) spend history only, so they are found from
the unique histories with their customer counts (``forecast.data.compress``): from a run's customer table, or from
the compressed summary the Spark engine brings to its driver, without any per-customer row there. Both give the same
figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.compress import Histories, SpendHistories

#: P(alive) above which a customer counts as active in the headline.
ACTIVE_THRESHOLD = 0.5


@dataclass(frozen=True)
class CustomerDigest:
    """The customers as the report draws them.

    Attributes
    ----------
    customers
        How many there are.
    mean_alive, share_alive
        Mean P(alive), and the share with P(alive) above ``ACTIVE_THRESHOLD``.
    frequency_counts
        Customers with 0, 1, 2, ... repeat purchases (index = repeat purchases).
    ages, customers_of_age
        The distinct T (model time units since the first purchase) and the customers of each.
    spend_frequency, spend_values, spend_customers
        The repeat buyers with a positive average spend (those the spend model is fitted on): each distinct
        (repeat purchases, average spend) and the customers of each.
    has_customer_intervals
        Whether the customers have CLV intervals.
    """

    customers: int
    mean_alive: float
    share_alive: float
    frequency_counts: np.ndarray
    ages: np.ndarray
    customers_of_age: np.ndarray
    spend_frequency: np.ndarray
    spend_values: np.ndarray
    spend_customers: np.ndarray
    has_customer_intervals: bool

    @classmethod
    def of_histories(
        cls,
        histories: Histories,
        spend_histories: SpendHistories,
        p_alive: np.ndarray,
        has_customer_intervals: bool,
    ) -> CustomerDigest:
        """The digest of customers given by their unique histories and counts.

        Parameters
        ----------
        histories, spend_histories
            Unique (x, t_x, T) rows and (x, m) rows with their customer counts (``counts``).
        p_alive
            P(alive) of each history row.
        has_customer_intervals
            Whether the customers have CLV intervals.
        """
        counts = np.asarray(histories.counts, float)
        customers = int(np.rint(counts.sum()))
        rows = histories.rows
        frequency = np.round(rows[:, 0]).astype(np.int64)
        frequency_counts = np.bincount(frequency, weights=counts).round().astype(np.int64)
        by_age = pd.Series(counts).groupby(rows[:, 2]).sum()
        alive = np.asarray(p_alive, float)
        spend_rows, spend_counts = spend_histories.rows, np.asarray(spend_histories.counts, float)
        repeat = (spend_rows[:, 0] > 0) & (spend_rows[:, 1] > 0)
        return cls(
            customers=customers,
            mean_alive=float(alive @ counts / counts.sum()) if customers else float("nan"),
            share_alive=float(counts[alive > ACTIVE_THRESHOLD].sum() / counts.sum()) if customers else float("nan"),
            frequency_counts=frequency_counts,
            ages=by_age.index.to_numpy(float),
            customers_of_age=by_age.to_numpy().round().astype(np.int64),
            spend_frequency=spend_rows[repeat, 0],
            spend_values=spend_rows[repeat, 1],
            spend_customers=spend_counts[repeat].round().astype(np.int64),
            has_customer_intervals=has_customer_intervals,
        )

    @classmethod
    def of_customers(cls, customers: pd.DataFrame) -> CustomerDigest:
        """The digest of a customer table (frequency, recency, T, monetary_value and p_alive per customer)."""
        histories, spend_histories = Histories.from_summary(customers), SpendHistories.from_summary(customers)
        intervals = {"clv_lower", "clv_upper"} <= set(customers.columns)
        has_intervals = intervals and bool(customers["clv_lower"].notna().any())
        return cls.of_scored_histories(histories, spend_histories, customers["p_alive"].to_numpy(float), has_intervals)

    @classmethod
    def of_scored_histories(
        cls,
        histories: Histories,
        spend_histories: SpendHistories,
        customer_p_alive: np.ndarray,
        has_customer_intervals: bool,
    ) -> CustomerDigest:
        """The digest of customers whose histories index them (``row_of_customer``), with each one's P(alive)."""
        p_alive = np.zeros(len(histories.rows))
        p_alive[histories.row_of_customer] = customer_p_alive
        return cls.of_histories(histories, spend_histories, p_alive, has_customer_intervals)

    @property
    def repeat_buyers(self) -> int:
        """Repeat buyers with a positive average spend."""
        return int(self.spend_customers.sum())
