"""What is fitted when the configured model cannot be: the NBD without visible dropout, and Gamma-Gamma with
shrinkage, then the mean spend, when Gamma-Gamma cannot be fitted (forecast.models.catalog)."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.data.compress import Histories, SpendHistories
from forecast.errors import FitError, ForecastWarning
from forecast.models import (
    NBD,
    BetaGeo,
    GammaGamma,
    MeanSpend,
    ModifiedBetaGeo,
    ParetoNBD,
    fit_purchase_model,
    fit_spend_model,
    mean_amount_per_purchase,
)
from forecast.models.artifacts import load_model, model_artifact, model_from_dict, write_json
from forecast.models.catalog import SPEND_FALLBACK_SHRINKAGE
from forecast.models.nbd import _NBDObjective
from tests.conftest import model_with_params
from tests.nbd_process import NBD_TRUTH, nbd_transactions


@pytest.fixture(scope="module")
def nbd_summary(tmp_path_factory) -> pd.DataFrame:
    """2,000 customers simulated without dropout (``tests.nbd_process``), summarised by day in weeks."""
    from forecast.config import DataConfig
    from forecast.data.ingest import read_transactions
    from forecast.data.summary import summarize

    path = tmp_path_factory.mktemp("nbd") / "log.csv"
    nbd_transactions(2000, seed=0).to_csv(path, index=False)
    return summarize(read_transactions(DataConfig(path=str(path))).connection, dt.date(2021, 6, 30), 7.0)


def spend_histories(frequency, monetary_value) -> SpendHistories:
    return SpendHistories.from_summary(pd.DataFrame({"frequency": frequency, "monetary_value": monetary_value}))


def rows_of(summary: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: summary[name].to_numpy(float) for name in ("frequency", "recency", "T")}


# --- the NBD ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_class", "edge"),
    [
        (BetaGeo, {"a": 1e-200, "b": 2.0}),
        (ModifiedBetaGeo, {"a": 1e-200, "b": 2.0}),
        (ParetoNBD, {"s": 1e-200, "beta": 10.0}),
    ],
)
def test_nbd_likelihood_is_the_limit_of_the_models_with_dropout(cdnow_sample_summary, model_class, edge):
    """BG/NBD and MBG/NBD as a -> 0 and Pareto/NBD as s -> 0 are the NBD (Fader, Hardie & Lee 2005, section 2)."""
    data, weights = rows_of(cdnow_sample_summary), np.ones(len(cdnow_sample_summary))
    r, alpha = 0.3, 4.0
    nbd = NBD._log_likelihood(np.array([r, alpha]), data, weights)
    params = np.array([r, alpha, *edge.values()])
    assert model_class._log_likelihood(params, data, weights) == pytest.approx(nbd, rel=1e-9)


def test_nbd_objective_gradient_equals_central_differences(cdnow_sample_summary):
    objective = _NBDObjective(rows_of(cdnow_sample_summary), np.ones(len(cdnow_sample_summary)), penalizer=0.1)
    x = np.log([0.4, 3.0])
    _, gradient = objective(x)
    step = 1e-6
    numerical = [(objective(x + e)[0] - objective(x - e)[0]) / (2 * step) for e in np.eye(2) * step]
    np.testing.assert_allclose(gradient, numerical, rtol=1e-6)


def test_nbd_predictions_are_the_gamma_poisson_formulas():
    model = model_with_params(NBD, {"r": 0.5, "alpha": 5.0})
    x, t_x, T = np.array([0.0, 3.0, 10.0]), np.array([0.0, 10.0, 50.0]), np.array([60.0, 60.0, 60.0])
    np.testing.assert_allclose(model.expected_purchases(52.0, x, t_x, T), (0.5 + x) / (5.0 + T) * 52.0, rtol=1e-15)
    assert (model.p_alive(x, t_x, T) == 1.0).all()
    t = np.array([1.0, 26.0, 78.0])
    probabilities = np.array([model.probability_of_purchases(n, t) for n in range(400)])
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, rtol=1e-10)
    np.testing.assert_allclose(np.arange(400) @ probabilities, model.expected_purchases_new(t), rtol=1e-10)
    np.testing.assert_allclose(model.expected_purchases_new(t), 0.5 / 5.0 * t, rtol=1e-15)


@pytest.mark.parametrize("model_name", ["bgnbd", "mbgnbd", "pareto"])
def test_without_visible_dropout_the_nbd_is_fitted_and_recovers_the_truth(nbd_summary, model_name):
    """2,000 simulated customers with r = 0.5, alpha = 5 and no dropout: every model's likelihood runs off to
    no dropout; the NBD is fitted instead, within three standard errors of the truth (r 0.513 +- 0.018,
    alpha 5.31 +- 0.26)."""
    with pytest.warns(ForecastWarning, match=r"No visible dropout: the .* likelihood is highest as (a|s) -> 0") as w:
        model = fit_purchase_model(model_name, Histories.from_summary(nbd_summary))
    (message,) = [str(m.message) for m in w if issubclass(m.category, ForecastWarning)]
    assert "model without dropout (NBD" in message and "P(alive) is 1 for everyone" in message
    assert isinstance(model, NBD) and model.to_dict()["name"] == "nbd"
    for name, truth in NBD_TRUTH.items():
        assert abs(model.params_[name] - truth) < 3 * model.result_.standard_errors[name]
    assert model.result_.customers == 2000 and model.result_.covariance_log_params is not None


def test_data_with_dropout_keep_the_configured_model_and_its_warnings(cdnow_sample_summary):
    histories = Histories.from_summary(cdnow_sample_summary)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForecastWarning)
        model = fit_purchase_model("bgnbd", histories)
    assert type(model) is BetaGeo
    assert model.result_ == BetaGeo().fit(*rows_of(cdnow_sample_summary).values()).result_


def test_a_genuine_non_convergence_still_stops_with_a_fit_error():
    """Histories on a wildly wrong time scale (T = 1,000,000 units): the optimiser stops, not at no dropout."""
    histories = [(x, tx, 1e6) for x, tx in ((0, 0.0), (1, 3e5), (2, 8e5), (3, 1e6))] * 10
    summary = pd.DataFrame(histories, columns=["frequency", "recency", "T"])
    with pytest.raises(FitError, match=r"did not converge on 40 customers\. Try a longer calibration period"):
        fit_purchase_model("bgnbd", Histories.from_summary(summary.assign(monetary_value=0.0)))


def test_nbd_round_trips_through_its_artifact_and_the_manifest(tmp_path: Path, nbd_summary):
    model = NBD(penalizer=0.001).fit(*rows_of(nbd_summary).values())
    assert model.to_dict()["penalizer"] == 0.001
    path = tmp_path / "purchases.json"
    write_json(path, model_artifact(model, "purchases", {"as_of": "2021-06-30"}))
    for loaded in (load_model(path), model_from_dict(json.loads(path.read_text()))):
        assert isinstance(loaded, NBD) and loaded.params_ == model.params_
        x, t_x, T = rows_of(nbd_summary).values()
        np.testing.assert_array_equal(
            loaded.expected_purchases(52.0, x, t_x, T), model.expected_purchases(52.0, x, t_x, T)
        )


# --- the spend model -------------------------------------------------------------------------------------------


def test_every_repeat_buyer_with_the_same_average_spend_gives_the_mean_spend():
    with pytest.warns(ForecastWarning, match=r"Every repeat buyer has the same average spend.*'mean_spend'"):
        spend = fit_spend_model(spend_histories([1, 2, 3, 4, 0, 0], [10.0, 10.0, 10.0, 10.0, 0.0, 0.0]))
    assert isinstance(spend, MeanSpend) and spend.to_dict()["name"] == "mean_spend"
    np.testing.assert_array_equal(spend.expected_spend(np.array([0.0, 5.0]), np.array([0.0, 30.0])), [10.0, 10.0])
    assert spend.result_.covariance_log_params is None  # so the run leaves its CLV intervals empty


def test_gamma_gamma_that_does_not_converge_is_fitted_with_shrinkage():
    """946 repeat buyers (CDNOW frequencies) whose repeat purchases alternate 19 and 21: nearly alike, so the
    likelihood runs off to q -> infinity; with shrinkage it has a maximum."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

        frequency = load_cdnow_summary_data_with_monetary_value()["frequency"].to_numpy()
    monetary = np.array([np.mean([19.0 if k % 2 else 21.0 for k in range(1, n + 1)]) if n else 0.0 for n in frequency])
    with pytest.raises(FitError, match="did not converge"):
        GammaGamma().fit(frequency, monetary)
    with pytest.warns(ForecastWarning) as w:
        spend = fit_spend_model(spend_histories(frequency, monetary))
    messages = [str(m.message) for m in w if issubclass(m.category, ForecastWarning)]
    assert any("did not converge on 946 customers), so it was fitted with shrinkage 0.01" in m for m in messages)
    assert type(spend) is GammaGamma and spend.to_dict()["shrinkage"] == SPEND_FALLBACK_SHRINKAGE
    assert spend.params_["q"] > 1 and 19.0 < spend.mean_spend() < 21.0
    assert spend.result_.covariance_log_params is not None


def test_when_shrinkage_fails_too_the_mean_of_the_repeat_buyers_is_taken():
    with pytest.warns(ForecastWarning, match=r"with or without shrinkage .* mean average spend of the 3 repeat buyers"):
        spend = fit_spend_model(spend_histories([1, 2, 5, 0], [12.0, 20.0, 31.0, 0.0]))
    assert isinstance(spend, MeanSpend) and spend.mean_spend() == pytest.approx(21.0)


def test_without_repeat_buyers_the_mean_amount_of_all_purchases_is_taken():
    """Two one-time buyers and a repeat buyer whose repeat purchase netted to 0: 60 over 4 purchases."""
    summary = pd.DataFrame({"frequency": [0, 0, 1], "monetary_value": [0.0, 0.0, 0.0], "revenue": [10.0, 20.0, 30.0]})
    assert mean_amount_per_purchase(summary) == 15.0
    assert mean_amount_per_purchase(summary.drop(columns="revenue")) is None
    histories = SpendHistories.from_summary(summary)
    with pytest.warns(ForecastWarning, match=r"is the mean amount of all purchases \(nobody bought twice"):
        spend = fit_spend_model(histories, mean_per_purchase=mean_amount_per_purchase(summary))
    assert isinstance(spend, MeanSpend) and spend.mean_spend() == 15.0


def test_without_any_positive_amount_the_spend_model_is_a_fit_error():
    with pytest.raises(FitError, match="No purchase has a positive amount"):
        fit_spend_model(spend_histories([0, 1, 2], [0.0, 0.0, -5.0]))


def test_mean_spend_round_trips_through_its_artifact(tmp_path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForecastWarning)
        spend = fit_spend_model(spend_histories([1, 2, 3], [10.0, 10.0, 10.0]))
    path = tmp_path / "spend.json"
    write_json(path, model_artifact(spend, "spend", {"as_of": "2021-06-30"}))
    assert json.loads(path.read_text())["log_likelihood"] is None  # no likelihood, JSON null
    loaded = load_model(path)
    assert isinstance(loaded, MeanSpend) and loaded.params_ == {"mean": 10.0}
    frequency = pd.Series([0, 4], index=pd.Index(["a", "b"], name="customer_id"))
    expected = loaded.expected_spend(frequency, pd.Series([0.0, 12.0], index=frequency.index))
    assert expected.name == "expected_spend" and expected.tolist() == [10.0, 10.0]
