"""The report's customer digest: the same from a customer table as from the compressed histories another engine has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.data.compress import Histories, SpendHistories
from forecast.report.build import check_spend_model, period_transactions, read_report_run
from forecast.report.digest import CustomerDigest
from forecast.report.run_folder import read_models


def compressed_digest(customers: pd.DataFrame) -> CustomerDigest:
    """The digest as the Spark engine finds it: from unique rows with customer counts, P(alive) per row."""
    rows = customers.groupby(["frequency", "recency", "T"], as_index=False).agg(
        count=("p_alive", "size"), p_alive=("p_alive", "first")
    )
    spend = customers.assign(monetary_value=np.where(customers["frequency"] > 0, customers["monetary_value"], 0.0))
    spend_rows = spend.groupby(["frequency", "monetary_value"], as_index=False).size()
    histories = Histories.from_counts(rows, rows["count"])
    p_alive = rows.set_index(["frequency", "recency", "T"])["p_alive"]
    keys = pd.MultiIndex.from_arrays(
        [histories.rows[:, 0].astype(np.int64), histories.rows[:, 1], histories.rows[:, 2]]
    )
    return CustomerDigest.of_histories(
        histories, SpendHistories.from_counts(spend_rows, spend_rows["size"]), p_alive.reindex(keys).to_numpy(), True
    )


def test_the_digest_of_compressed_histories_is_the_digest_of_the_customers(sample_run: Path) -> None:
    folder = read_report_run(sample_run)
    purchases, spend = read_models(folder)
    customers = folder.customers
    whole, compressed = CustomerDigest.of_customers(customers), compressed_digest(customers)
    assert whole.customers == compressed.customers == len(customers) == 2357
    assert whole.mean_alive == pytest.approx(customers["p_alive"].mean(), rel=1e-12)
    assert whole.share_alive == pytest.approx((customers["p_alive"] > 0.5).mean(), rel=1e-12)
    for name in ("mean_alive", "share_alive"):
        assert getattr(compressed, name) == pytest.approx(getattr(whole, name), rel=1e-12), name
    for name in ("frequency_counts", "ages", "customers_of_age", "spend_frequency", "spend_values", "spend_customers"):
        np.testing.assert_array_equal(getattr(compressed, name), getattr(whole, name), err_msg=name)
    assert whole.repeat_buyers == ((customers["frequency"] > 0) & (customers["monetary_value"] > 0)).sum()
    pd.testing.assert_frame_equal(period_transactions(compressed, purchases), period_transactions(whole, purchases))
    checked = check_spend_model(whole, spend)
    assert checked.summary == check_spend_model(compressed, spend).summary
    repeat = customers[(customers["frequency"] > 0) & (customers["monetary_value"] > 0)]
    assert checked.summary["observed_median"] == f"{repeat['monetary_value'].median():,.2f}"
    assert checked.summary["observed_mean"] == f"{repeat['monetary_value'].mean():,.2f}"
    assert checked.correlation == pytest.approx(np.corrcoef(repeat["frequency"], repeat["monetary_value"])[0, 1])
