"""Tests of forecast.evaluation.selection: the purchase model chosen by a validation inside the data up to a cut-off."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.config import RunConfig, load_config
from forecast.data.ingest import read_transactions
from forecast.data.summary import holdout_purchases, summarize
from forecast.errors import ForecastWarning
from forecast.evaluation.log_queries import DuckDBLog
from forecast.evaluation.selection import (
    ModelScore,
    Window,
    WindowCounts,
    choose,
    select_purchase_model,
    validation_windows,
    window_counts,
)
from tests.conftest import CONFIGS
from tests.evaluation.conftest import connection_for

CUTOFF = dt.date(1997, 9, 30)


def test_windows_are_13_weeks_or_a_third_of_the_span_with_enough_history_before_them() -> None:
    assert validation_windows(dt.date(2020, 1, 1), dt.date(2021, 6, 30), 91, 1) == [
        Window(dt.date(2021, 3, 31), dt.date(2021, 6, 30))
    ]
    # The CDNOW sample's 272 days to 1997-09-30: 90-day windows; the third origin would have 2 days of history.
    assert validation_windows(dt.date(1997, 1, 1), CUTOFF, 91, 3) == [
        Window(dt.date(1997, 7, 2), CUTOFF), Window(dt.date(1997, 4, 3), dt.date(1997, 7, 2))
    ]  # fmt: skip
    assert validation_windows(dt.date(2020, 1, 1), dt.date(2020, 1, 16), 91, 1) == []


def test_window_counts_are_the_summary_at_the_origin_and_the_purchases_after_it(
    sample_config: RunConfig, sample_log: pd.DataFrame
) -> None:
    """The compressed rows equal ``summarize`` as of the origin joined with ``holdout_purchases`` to the window's end,
    grouped by (frequency, recency, T, n)."""
    con = connection_for(sample_log)
    window = Window(dt.date(1997, 7, 2), CUTOFF)
    counts = window_counts(con, window, 7.0, "day", 100_000)
    summary = summarize(con, window.origin, 7.0)
    later = holdout_purchases(con, window.origin, window.end)["purchases_holdout"].reindex(summary.index)
    expected = (
        summary[["frequency", "recency", "T"]].assign(n=later.to_numpy()).astype(float)
        .groupby(["frequency", "recency", "T", "n"]).size().rename("customers").astype(float).reset_index()
    )  # fmt: skip
    pd.testing.assert_frame_equal(counts.rows, expected, check_exact=True)
    assert counts.customers_at_origin == len(summary) and not counts.sampled


def _changed_after(log: pd.DataFrame, cutoff: dt.date) -> pd.DataFrame:
    """The log with everything after ``cutoff`` changed: half its rows dropped, amounts and days scrambled, new
    customers and later rows added."""
    rng = np.random.default_rng(17)
    after = log["ts"] >= pd.Timestamp(cutoff + dt.timedelta(days=1))
    later = log[after].sample(frac=0.5, random_state=5).copy()
    later["amount"] = rng.uniform(0, 500, len(later))
    later["ts"] = later["ts"] + pd.to_timedelta(rng.integers(0, 60, len(later)), "D")
    newcomers = later.head(40).assign(customer_id=[f"new{i}" for i in range(40)])
    return pd.concat([log[~after], later, newcomers], ignore_index=True).sample(frac=1.0, random_state=2)


def test_nothing_after_the_cutoff_changes_the_choice_or_the_scores(
    sample_config: RunConfig, sample_log: pd.DataFrame
) -> None:
    auto = sample_config.model_copy(update={"purchase_model": "auto"})
    before = select_purchase_model(DuckDBLog(connection_for(sample_log)), auto, CUTOFF).document()
    after = select_purchase_model(
        DuckDBLog(connection_for(_changed_after(sample_log, CUTOFF))), auto, CUTOFF
    ).document()
    assert after == before
    assert before["windows"][0]["scored_through"] == CUTOFF.isoformat()
    assert set(before["scores"]) == {"bgnbd", "mbgnbd", "pareto"}


def test_a_sample_by_id_hash_above_max_customers(sample_config: RunConfig, sample_log: pd.DataFrame) -> None:
    """1,000 of the 2,357 customers (a Bernoulli sample by id hash, so about 1,000), the same ones every time."""
    config = sample_config.model_copy(
        update={"model_selection": sample_config.model_selection.model_copy(update={"max_customers": 1000})}
    )
    first = select_purchase_model(DuckDBLog(connection_for(sample_log)), config, CUTOFF).document()
    again = select_purchase_model(DuckDBLog(connection_for(sample_log)), config, CUTOFF).document()
    assert first == again
    window = first["windows"][0]
    assert window["sampled"] and 850 <= window["customers"] <= 1150
    assert window["customers_at_origin"] == pytest.approx(2357, rel=0.1)  # counted approximately above the cap


def _scores(gap_per_customer: float, noise: float) -> tuple[list[WindowCounts], list[ModelScore]]:
    """Two models on 10,000 customers: b scores -0.5 each; a scores ``gap_per_customer`` less, plus noise."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"frequency": 0.0, "recency": 0.0, "T": 1.0, "n": 0.0, "customers": np.ones(10_000)})
    table = WindowCounts(Window(dt.date(2020, 1, 1), dt.date(2020, 4, 1)), rows, 10_000)
    best = np.full(10_000, -0.5)
    worse = best - gap_per_customer + rng.normal(0.0, noise, 10_000)
    return [table], [ModelScore("a", worse), ModelScore("b", best)]


def test_a_configured_model_clearly_worse_than_another_warns() -> None:
    """Rule: behind the best by more than 2 per 1,000 customers and by more than 2 standard errors."""
    tables, scores = _scores(0.003, 0.0)  # 3 per 1,000 behind, no noise
    with pytest.warns(ForecastWarning, match=r"configured purchase_model a scores clearly worse than b"):
        selection = choose("a", CUTOFF, tables, scores)
    assert selection.chosen == "a" and selection.clearly_better == "b"
    assert selection.scores["a"]["behind_best_per_1000"] == pytest.approx(3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Noisy: 3 behind with a standard error of about 5 per 1,000; or only 1.5 behind.
        assert choose("a", CUTOFF, *_scores(0.003, 0.5)).clearly_better is None
        assert choose("a", CUTOFF, *_scores(0.0015, 0.0)).clearly_better is None
        assert choose("auto", CUTOFF, *_scores(0.003, 0.0)).chosen == "b"


def test_bgnbd_configured_on_full_cdnow_warns_that_mbgnbd_scores_better() -> None:
    """Full CDNOW as of 1998-06-30, window 1998-04-01 .. 06-30: BG/NBD trails MBG/NBD by about 2.6 per 1,000
    customers (standard error 0.3), which is clear; the run keeps the configured BG/NBD and says so."""
    config = load_config(CONFIGS / "cdnow.yaml").model_copy(update={"purchase_model": "bgnbd"})
    con = read_transactions(config.data).connection
    with pytest.warns(ForecastWarning, match="bgnbd scores clearly worse than mbgnbd"):
        selection = select_purchase_model(DuckDBLog(con), config, dt.date(1998, 6, 30), models=["bgnbd", "mbgnbd"])
    assert selection.chosen == "bgnbd"
    entry = selection.scores["bgnbd"]
    assert entry["behind_best_per_1000"] == pytest.approx(2.6, abs=0.05)
    assert entry["standard_error_per_1000"] == pytest.approx(0.30, abs=0.02)
    assert selection.document()["windows"][0] == {
        "fit_through": "1998-03-31", "scored_through": "1998-06-30", "days": 91, "customers": 23570,
        "customers_at_origin": 23570, "sampled": False, "actual_purchases": 5664.0,
    }  # fmt: skip


def test_auto_falls_back_to_bgnbd_with_a_warning_when_the_log_is_too_short(sample_log: pd.DataFrame) -> None:
    short = sample_log[sample_log["ts"] < pd.Timestamp("1997-01-16")]
    config = RunConfig.model_validate({"data": {"path": "unused.csv"}, "purchase_model": "auto"})
    with pytest.warns(ForecastWarning, match="auto could not validate the models on the data up to 1997-01-15"):
        selection = select_purchase_model(DuckDBLog(connection_for(short)), config, dt.date(1997, 1, 15))
    assert selection.chosen == "bgnbd" and selection.reason.startswith("not validated")
    configured = config.model_copy(update={"purchase_model": "pareto"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            select_purchase_model(DuckDBLog(connection_for(short)), configured, dt.date(1997, 1, 15)).chosen == "pareto"
        )


@pytest.mark.slow
def test_auto_chooses_bgnbd_on_a_log_simulated_from_bgnbd(tmp_path: Path) -> None:
    """20,000 customers simulated from BG/NBD (seeded): the validation prefers the true model."""
    from forecast.data.simulate import write_simulated_log

    path = tmp_path / "log.parquet"
    write_simulated_log(path, 20_000, end=dt.date(2021, 6, 30), seed=7)
    config = RunConfig.model_validate({"data": {"path": str(path)}, "purchase_model": "auto"})
    selection = select_purchase_model(
        DuckDBLog.of(read_transactions(config.data).connection, config), config, dt.date(2021, 6, 30)
    )
    assert selection.chosen == "bgnbd", selection.reason
