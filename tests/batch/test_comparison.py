"""The run's like-for-like comparison on the CDNOW sample: manifest, customers, segments.csv and the report agree
with a computation from customers.parquet and the run's own model files that does not use the pipeline's sums."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.batch.pipeline import run
from forecast.config import DAYS_PER_MONTH, load_config
from forecast.models.artifacts import load_model
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/cdnow_sample.yaml (2,357 customers, as_of 1997-09-30, BG/NBD, 1% a month, 3-year lifespan)."""
    folder = tmp_path_factory.mktemp("comparison")
    config = load_config(CONFIGS / "cdnow_sample.yaml").model_copy(update={"models_dir": str(folder / "models")})
    return run(config, output=folder / "run").output


def test_manifest_compares_36_discounted_months_of_both(sample_run: Path) -> None:
    """span_months = 36 (the 3-year lifespan), discounted; predictive and heuristic recomputed per customer, month by
    month, from customers.parquet and models/purchases.json (E[X(t)] of each customer's own history, not of the
    unique histories the run evaluates), give the manifest's totals and ratio to 1e-9."""
    comparison = json.loads((sample_run / "manifest.json").read_text())["comparison"]
    assert comparison["span_months"] == 36 and comparison["discounted"] is True
    customers = pd.read_parquet(sample_run / "customers.parquet")
    discount = 1.01 ** -np.arange(1, 37)
    heuristic = (customers["avg_purchase_value"] * customers["purchases_per_year"] / 12 * 0.3).sum() * discount.sum()
    purchases = load_model(sample_run / "models" / "purchases.json")
    history = (customers[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    frequency, recency, T = history
    by_month = np.column_stack(
        [purchases.expected_purchases(k * DAYS_PER_MONTH / 7, frequency, recency, T) for k in range(37)]
    )
    predictive = float((0.3 * customers["expected_spend"].to_numpy() * (np.diff(by_month, axis=1) @ discount)).sum())
    assert comparison["predictive"] == pytest.approx(predictive, rel=1e-9)
    assert comparison["heuristic"] == pytest.approx(heuristic, rel=1e-9)
    assert comparison["gap"] == pytest.approx(heuristic - predictive, rel=1e-9)
    assert comparison["ratio"] == pytest.approx(heuristic / predictive, rel=1e-9)
    # The plain ratio (3 undiscounted years against 12 discounted months) is not the matched one.
    plain = customers["clv_heuristic"].sum() / customers["clv"].sum()
    assert plain > 2 * comparison["ratio"]


def test_customers_and_segments_carry_the_lifetime_and_matched_values(sample_run: Path) -> None:
    """clv_lifetime >= clv_matched >= clv per customer; segments.csv's all-customers row adds them up (cents), and
    its matched heuristic uses the segment averages (as clv_heuristic_total), discounted like the predictive."""
    customers = pd.read_parquet(sample_run / "customers.parquet")
    assert (customers["clv_lifetime"] >= customers["clv_matched"]).all()
    assert (customers["clv_matched"] >= customers["clv"]).all()
    segments = pd.read_csv(sample_run / "segments.csv")
    everyone = segments[segments["segmentation"] == "all"].iloc[0]
    assert everyone["matched_span_months"] == 36
    assert everyone["clv_lifetime_total"] == pytest.approx(customers["clv_lifetime"].sum(), abs=0.01)
    assert everyone["clv_matched_total"] == pytest.approx(customers["clv_matched"].sum(), abs=0.01)
    share = (1.01 ** -np.arange(1, 37)).sum() / 36  # the discounted months' share of 36 undiscounted ones
    assert everyone["clv_heuristic_matched_total"] == pytest.approx(everyone["clv_heuristic_total"] * share, abs=0.02)
    assert everyone["heuristic_gap_matched"] == pytest.approx(
        everyone["clv_heuristic_matched_total"] - everyone["clv_matched_total"], abs=0.02
    )
    tiers = segments[segments["segmentation"] == "value_tier"]
    assert tiers["clv_matched_total"].sum() == pytest.approx(everyone["clv_matched_total"], abs=0.05)


def test_report_headline_names_the_span_and_the_discounting(sample_run: Path) -> None:
    """The headline's comparison and gap are on the matched basis, say so, and say what the gap means for a budget."""
    page = (sample_run / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="headline">') : page.index("</section>", page.index('id="headline"'))]
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", section)))
    comparison = json.loads((sample_run / "manifest.json").read_text())["comparison"]
    assert "Heuristic CLV, 36 months" in text and "Predictive CLV, 36 months" in text
    assert "heuristic − predictive over the same 36 months, each discounted at 1% a month" in text
    assert f"the heuristic is {comparison['ratio']:.1f}× the predictive figure" in text
    assert f"{comparison['gap']:,.0f} more value over the same 36 discounted months than the models expect" in text
    assert "Lifetime CLV" in text
