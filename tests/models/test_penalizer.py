"""The models' ``penalizer`` (config ``penalizer``): lifetimes' L2 penalty, with lifetimes' fitters as the reference.

lifetimes adds ``penalizer_coef * sum(params ** 2)`` to the mean negative log-likelihood per customer (the total
for Pareto/NBD), with alpha and beta in its rescaled time (ages up to 1). The reference values are lifetimes'
own fitters with the same ``penalizer_coef`` on the CDNOW summary lifetimes ships
(``load_cdnow_summary_data_with_monetary_value``, 2,357 customers, weeks 1-39).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from forecast.errors import ForecastWarning
from forecast.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD
from forecast.models.artifacts import load_model, model_artifact, write_json
from forecast.models.bgnbd import _BetaGeoObjective
from forecast.models.gamma_gamma import _GammaGammaObjective

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from autograd import value_and_grad
    from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

#: The promise of the brief: parameters to 1e-4 relative (they agree to about 1e-13).
PARAMS_REL = 1e-4
PURCHASE_MODELS = [
    (BetaGeo, BetaGeoFitter, ["r", "alpha", "a", "b"]),
    (ModifiedBetaGeo, ModifiedBetaGeoFitter, ["r", "alpha", "a", "b"]),
    (ParetoNBD, ParetoNBDFitter, ["r", "alpha", "s", "beta"]),
]


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

        return load_cdnow_summary_data_with_monetary_value()


def relative(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    return float(np.max(np.abs(ours - theirs) / np.abs(theirs)))


def lifetimes_purchase_fit(fitter_class: type, summary: pd.DataFrame, penalizer: float):
    """lifetimes' fitter on the summary's rows; Pareto/NBD's random start from the seed the models use (0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(0)  # noqa: NPY002 (lifetimes draws Pareto/NBD's start from the global generator)
        return fitter_class(penalizer_coef=penalizer).fit(summary["frequency"], summary["recency"], summary["T"])


@pytest.mark.parametrize("penalizer", [0.001, 0.1])
@pytest.mark.parametrize(("model_class", "fitter_class", "names"), PURCHASE_MODELS)
def test_penalised_purchase_fit_equals_lifetimes_fitter_with_the_same_penalizer_coef(
    cdnow, model_class, fitter_class, names, penalizer
):
    model = model_class(penalizer=penalizer).fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    fitter = lifetimes_purchase_fit(fitter_class, cdnow, penalizer)
    assert relative(list(model.params_.values()), fitter.params_[names].to_numpy()) < PARAMS_REL
    unpenalised = model_class().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    assert model.params_ != unpenalised.params_  # the penalty does something
    assert model.penalizer == penalizer and model.result_.converged


@pytest.mark.parametrize("penalizer", [0.001, 0.1])
def test_penalised_gamma_gamma_equals_lifetimes_fitter_with_the_same_penalizer_coef(cdnow, penalizer):
    repeat = cdnow[cdnow["frequency"] > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForecastWarning)  # q <= 1 at 0.1 (next test)
        model = GammaGamma(penalizer=penalizer).fit(repeat["frequency"], repeat["monetary_value"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = GammaGammaFitter(penalizer_coef=penalizer).fit(repeat["frequency"], repeat["monetary_value"])
    assert relative(list(model.params_.values()), fitter.params_[["p", "q", "v"]].to_numpy()) < PARAMS_REL


def test_lifetimes_penalty_pulls_gamma_gamma_q_below_1_where_shrinkage_does_not(cdnow):
    """Why the spend fallback shrinks the log-parameters: lifetimes' penalty pulls q toward 0, and below 1 the
    population mean spend p gamma / (q - 1) is undefined (one-time buyers' expected spend turns negative).

    On CDNOW: q = 3.74 unpenalised, 0.34 with penalizer 0.1; with shrinkage 0.01, q = 4.0 and the mean spend
    36.09 against 35.17.
    """
    repeat = cdnow[cdnow["frequency"] > 0]
    with pytest.warns(ForecastWarning, match=r"Gamma-Gamma q = 0\.3\d+ <= 1"):
        penalised = GammaGamma(penalizer=0.1).fit(repeat["frequency"], repeat["monetary_value"])
    assert penalised.params_["q"] < 1
    shrunk = GammaGamma(shrinkage=0.01).fit(repeat["frequency"], repeat["monetary_value"])
    fitted = GammaGamma().fit(repeat["frequency"], repeat["monetary_value"])
    assert shrunk.params_["q"] > 1
    assert shrunk.mean_spend() == pytest.approx(fitted.mean_spend(), rel=0.05)


def test_penalised_standard_errors_equal_lifetimes_autograd_standard_errors(cdnow):
    """The covariance is the inverse Hessian of the penalised objective, as lifetimes' (to 1e-4)."""
    model = BetaGeo(penalizer=0.1).fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    fitter = lifetimes_purchase_fit(BetaGeoFitter, cdnow, 0.1)
    ours = list(model.result_.standard_errors.values())
    assert relative(ours, fitter.standard_errors_[["r", "alpha", "a", "b"]].to_numpy()) < 1e-4
    repeat = cdnow[cdnow["frequency"] > 0]
    spend = GammaGamma(penalizer=0.001).fit(repeat["frequency"], repeat["monetary_value"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spend_fitter = GammaGammaFitter(penalizer_coef=0.001).fit(repeat["frequency"], repeat["monetary_value"])
    ours = list(spend.result_.standard_errors.values())
    assert relative(ours, spend_fitter.standard_errors_[["p", "q", "v"]].to_numpy()) < 1e-4


def test_penalised_objectives_equal_lifetimes_objectives_and_autograd_gradients(cdnow):
    frequency, recency, T = (cdnow[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    weights = np.ones(len(cdnow))
    objective = _BetaGeoObjective({"frequency": frequency, "recency": recency, "T": T}, weights, penalizer=0.1)
    args = (frequency.astype(int), recency, T, weights, 0.1)
    for log_params in (np.full(4, 0.1), np.log([0.24, 4.4, 0.79, 2.4])):
        value, gradient = objective(log_params)
        expected_value, expected_gradient = value_and_grad(BetaGeoFitter._negative_log_likelihood)(log_params, *args)
        assert value == pytest.approx(expected_value, rel=1e-12)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-9, atol=1e-12)
    repeat = cdnow[cdnow["frequency"] > 0]
    x, m = repeat["frequency"].to_numpy(float), repeat["monetary_value"].to_numpy(float)
    objective = _GammaGammaObjective({"frequency": x, "monetary_value": m}, np.ones(len(x)), penalizer=0.1)
    for log_params in (np.full(3, 0.1), np.log([6.25, 3.74, 15.44])):
        value, gradient = objective(log_params)
        expected_value, expected_gradient = value_and_grad(GammaGammaFitter._negative_log_likelihood)(
            log_params, x, m, np.ones(len(x)), 0.1
        )
        assert value == pytest.approx(expected_value, rel=1e-12)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-9, atol=1e-12)


def test_penalised_pareto_fit_on_compressed_rows_equals_the_fit_on_the_customers_rows(cdnow):
    """Every customer twice: the unique rows with count 2 give lifetimes' fit on the 4,714 rows (lifetimes' own
    compressed fit would weigh the penalty half as much as its fit on the rows)."""
    doubled = pd.concat([cdnow, cdnow], ignore_index=True)
    model = ParetoNBD(penalizer=0.1).fit(doubled["frequency"], doubled["recency"], doubled["T"])
    assert model.result_.unique_rows < len(doubled) / 2 + 1
    fitter = lifetimes_purchase_fit(ParetoNBDFitter, doubled, 0.1)
    assert relative(list(model.params_.values()), fitter.params_[["r", "alpha", "s", "beta"]].to_numpy()) < 1e-3


def test_penalizer_zero_is_maximum_likelihood_to_the_bit(cdnow):
    ours = BetaGeo(penalizer=0.0).fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    default = BetaGeo().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    assert ours.result_ == default.result_
    assert "penalizer" not in default.to_dict()  # artifacts of unpenalised fits are as before


def test_a_penalised_model_says_so_in_its_json_and_round_trips(tmp_path, cdnow):
    model = BetaGeo(penalizer=0.1).fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    assert model.to_dict()["penalizer"] == 0.1
    path = tmp_path / "purchases.json"
    write_json(path, model_artifact(model, "purchases", {"as_of": "1997-09-30"}))
    loaded = load_model(path)
    assert isinstance(loaded, BetaGeo) and loaded.penalizer == 0.1
    assert loaded.params_ == model.params_
    document = json.loads(path.read_text())
    document["penalizer"] = -1.0
    path.write_text(json.dumps(document))
    with pytest.raises(Exception, match="'penalizer' must be a non-negative number"):
        load_model(path)
