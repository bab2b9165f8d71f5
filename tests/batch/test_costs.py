"""Costs of serving customers on the CDNOW sample, end to end: the net figures of customers.parquet, segments.csv,
the manifest, the budget and the report agree with computations from the run's own files and model that do not use
the pipeline's code (direct hypergeometric form, quadrature, each customer's own history), and a run without costs
shows no net figures in its report."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import hyp2f1

from forecast.batch.pipeline import run
from forecast.config import DAYS_PER_MONTH, BudgetConfig, CostsConfig, load_config
from forecast.models.artifacts import load_model
from forecast.value.uncertainty import discounted_purchases_new
from forecast.value.valuation import Valuation
from tests.conftest import CONFIGS

PER_PURCHASE, PER_ACTIVE_MONTH = 1.5, 0.25
WEEKS_PER_MONTH = DAYS_PER_MONTH / 7


def sample_run(folder: Path, costs: CostsConfig) -> Path:
    """configs/cdnow_sample.yaml (2,357 customers, as_of 1997-09-30, BG/NBD, 1% a month, 30% margin, 3 years)."""
    config = load_config(CONFIGS / "cdnow_sample.yaml")
    config = config.model_copy(
        update={"models_dir": str(folder / "models"), "costs": costs, "budget": BudgetConfig(cac=5.0)}
    )
    return run(config, output=folder / "run").output


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample run with costs of 1.5 a purchase and 0.25 an active month, and the same run without costs."""
    folder = tmp_path_factory.mktemp("costs")
    costs = CostsConfig(per_purchase=PER_PURCHASE, per_active_month=PER_ACTIVE_MONTH)
    return sample_run(folder / "net", costs), sample_run(folder / "gross", CostsConfig())


def alive_months(params: dict[str, float], x: float, T: float, months: int) -> float:
    """sum_k 1.01^-k x the mean of BG/NBD's P(alive at T + u | alive at T) over month k, by quadrature of the
    hypergeometric form as the papers write it (argument -u / (alpha + T))."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))

    def survival(u: float) -> float:
        return float(hyp2f1(r + x, a, a + b + x, -u / (alpha + T)))

    return sum(
        1.01**-k * quad(survival, (k - 1) * WEEKS_PER_MONTH, k * WEEKS_PER_MONTH)[0] / WEEKS_PER_MONTH
        for k in range(1, months + 1)
    )


def test_net_clv_is_the_gross_less_each_customers_purchases_and_months_alive(runs: tuple[Path, Path]) -> None:
    """For 40 customers spread over the histories: clv - clv_net = P(alive) x (c_p x the discounted expected
    purchases + c_a x the discounted months alive) over 12 months, to 1e-5 relative; the gross clv is the run
    without costs; the heuristic loses (c_p x purchases per year + 12 c_a) x 3 years, exactly."""
    net_run, gross_run = runs
    customers = pd.read_parquet(net_run / "customers.parquet")
    gross = pd.read_parquet(gross_run / "customers.parquet")
    np.testing.assert_allclose(customers["clv"], gross["clv"], rtol=1e-12)
    np.testing.assert_allclose(gross["clv_net"], gross["clv"], rtol=0)
    purchases = load_model(net_run / "models" / "purchases.json")
    picked = customers.sort_values(["frequency", "T"]).iloc[np.linspace(0, len(customers) - 1, 40).astype(int)]
    discount = 1.01 ** -np.arange(1, 13)
    for _, row in picked.iterrows():
        history = [np.array([row[c]], float) for c in ("frequency", "recency", "T")]
        by_month = [purchases.expected_purchases(k * WEEKS_PER_MONTH, *history)[0] for k in range(13)]
        discounted = float(np.diff(by_month) @ discount)  # already multiplied by P(alive)
        months = row["p_alive"] * alive_months(purchases.params_, row["frequency"], row["T"], 12)
        cost = PER_PURCHASE * discounted + PER_ACTIVE_MONTH * months
        assert row["clv"] - row["clv_net"] == pytest.approx(cost, rel=1e-5)
    heuristic_cost = (PER_PURCHASE * customers["purchases_per_year"] + 12 * PER_ACTIVE_MONTH) * 3
    np.testing.assert_allclose(customers["clv_heuristic"] - customers["clv_heuristic_net"], heuristic_cost, rtol=1e-9)
    assert (customers["clv_matched"] - customers["clv_matched_net"] >= customers["clv"] - customers["clv_net"]).all()


def test_segments_and_manifest_add_up_the_net_figures(runs: tuple[Path, Path]) -> None:
    """segments.csv's all-customers row sums clv_net and clv_matched_net (cents) and nets its heuristic total with the
    segment's mean purchases per year; the manifest's comparison.net nets both sides over the same 36 discounted
    months."""
    net_run, _ = runs
    customers = pd.read_parquet(net_run / "customers.parquet")
    segments = pd.read_csv(net_run / "segments.csv")
    everyone = segments[segments["segmentation"] == "all"].iloc[0]
    assert everyone["clv_net_total"] == pytest.approx(customers["clv_net"].sum(), abs=0.01)
    assert everyone["clv_matched_net_total"] == pytest.approx(customers["clv_matched_net"].sum(), abs=0.01)
    per_year = customers["purchases_per_year"].mean()  # segments.csv rounds it to 4 significant figures
    heuristic_cost = len(customers) * (PER_PURCHASE * per_year + 12 * PER_ACTIVE_MONTH) * 3
    assert everyone["clv_heuristic_net_total"] == pytest.approx(
        everyone["clv_heuristic_total"] - heuristic_cost, abs=0.2
    )
    manifest = json.loads((net_run / "manifest.json").read_text())
    net = manifest["comparison"]["net"]
    months = (1.01 ** -np.arange(1, 37)).sum()
    matched_cost = ((PER_PURCHASE * customers["purchases_per_year"] / 12 + PER_ACTIVE_MONTH) * months).sum()
    assert net["heuristic"] == pytest.approx(manifest["comparison"]["heuristic"] - matched_cost, rel=1e-9)
    assert net["predictive"] == pytest.approx(customers["clv_matched_net"].sum(), rel=1e-9)
    assert net["gap"] == pytest.approx(net["heuristic"] - net["predictive"], rel=1e-9)
    assert manifest["totals"]["clv_net"] == pytest.approx(customers["clv_net"].sum(), rel=1e-9)


def test_a_new_customer_is_worth_less_by_the_cost_of_serving_and_pays_back_later(runs: tuple[Path, Path]) -> None:
    """new_customer_clv falls by c_p x (1 + discounted repeat purchases) + c_a x the discounted months alive of a
    customer with no history (quadrature, x = 0, T = 0), to a cent; the max acquisition cost and LTV:CAC follow, and
    payback comes no earlier."""
    net_run, gross_run = runs
    net, gross = (pd.read_csv(folder / "segments.csv") for folder in (net_run, gross_run))
    purchases = load_model(net_run / "models" / "purchases.json")
    valuation = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    repeat = discounted_purchases_new(purchases, valuation)[-1]
    cost = PER_PURCHASE * (1 + repeat) + PER_ACTIVE_MONTH * alive_months(purchases.params_, 0.0, 0.0, 12)
    np.testing.assert_allclose(net["new_customer_clv"], gross["new_customer_clv"] - cost, atol=0.006)
    np.testing.assert_allclose(net["max_acquisition_cost"], net["new_customer_clv"] / 3, atol=0.006)
    np.testing.assert_allclose(net["ltv_to_cac"], net["new_customer_clv"] / 5.0, rtol=1e-3)
    paid_back = net["payback_month"].notna()
    assert (net["payback_month"][paid_back] >= gross["payback_month"][paid_back]).all()


def test_the_report_shows_net_figures_only_when_there_are_costs(runs: tuple[Path, Path]) -> None:
    net_run, gross_run = runs
    text = unescape(re.sub(r"<[^>]+>", " ", (net_run / "report.html").read_text()))
    assert "Predictive CLV, net of costs" in text
    assert "costs of 1.50 a purchase and 0.25 an active month" in text
    assert "the net gap is" in text
    assert "the new-customer CLV, the maximum acquisition cost and the payback are net of them" in text
    plain = unescape(re.sub(r"<[^>]+>", " ", (gross_run / "report.html").read_text()))
    assert "net of costs" not in plain.lower()
