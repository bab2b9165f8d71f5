"""The models as scikit-learn estimators: settings, fitted attributes, get/set_params, summary, repr, pandas outputs."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from forecast.errors import FitError, NotFittedError
from forecast.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD
from forecast.models.base import Z_95
from tests import reference as ref
from tests.conftest import model_with_params

ALL_MODELS = (BetaGeo, ModifiedBetaGeo, ParetoNBD, GammaGamma)
PURCHASE_PARAMS = {
    BetaGeo: ref.BGNBD_CDNOW_SAMPLE,
    ModifiedBetaGeo: ref.MBGNBD_CDNOW_SAMPLE,
    ParetoNBD: ref.PARETO_CDNOW_SAMPLE,
}


@pytest.fixture(scope="module")
def cdnow():
    """The CDNOW 2,357-customer summary lifetimes ships (weeks 1-39), indexed by customer_id."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

        return load_cdnow_summary_data_with_monetary_value()


@pytest.fixture(scope="module")
def bgnbd(cdnow):
    return BetaGeo().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])


@pytest.fixture(scope="module")
def gamma_gamma(cdnow):
    return GammaGamma().fit(cdnow["frequency"], cdnow["monetary_value"])


class _WithSetting(BetaGeo):
    """A BG/NBD with another setting, to exercise get_params and set_params on a subclass's own settings."""

    def __init__(self, ci_level: float = 0.9) -> None:
        self.ci_level = ci_level


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_learned_attributes_are_absent_before_fit(model_class):
    model = model_class()
    assert not hasattr(model, "result_")
    assert not hasattr(model, "params_")
    assert not hasattr(model, "log_likelihood_")
    with pytest.raises(NotFittedError, match=rf"This {model_class.__name__} instance is not fitted yet"):
        model.summary()
    assert issubclass(NotFittedError, FitError)  # the CLI's mapping of FitError still applies


def test_fit_returns_self_and_sets_the_learned_attributes(cdnow):
    model = BetaGeo()
    assert model.fit(cdnow["frequency"], cdnow["recency"], cdnow["T"]) is model
    assert model.params_ == model.result_.params
    assert model.log_likelihood_ == model.result_.log_likelihood


def test_bgnbd_on_lifetimes_cdnow_matches_fader_hardie_lee_2005(bgnbd):
    """r, alpha, a, b = 0.2426, 4.4136, 0.7929, 2.4259 on 2,357 customers (Fader, Hardie & Lee 2005)."""
    for name, value in ref.BGNBD_CDNOW_SAMPLE.items():
        assert bgnbd.params_[name] == pytest.approx(value, abs=1e-3)
    assert bgnbd.result_.customers == 2357


def test_get_params_and_set_params_round_trip():
    assert BetaGeo().get_params() == {"penalizer": 0.0}
    assert GammaGamma().get_params() == {"penalizer": 0.0, "shrinkage": 0.0}
    assert BetaGeo().set_params(penalizer=0.1).get_params() == {"penalizer": 0.1}
    assert repr(BetaGeo(penalizer=0.1)) == "BetaGeo(penalizer=0.1)"
    model = _WithSetting()
    assert model.get_params() == {"ci_level": 0.9}
    assert model.set_params(ci_level=0.8) is model
    assert model.get_params(deep=False) == {"ci_level": 0.8}
    assert _WithSetting(**model.get_params()).get_params() == model.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'alpha' for estimator _WithSetting"):
        model.set_params(alpha=0.1)


def test_sklearn_clone_gives_an_unfitted_copy_with_the_same_settings(bgnbd):
    from sklearn.base import clone

    copy = clone(bgnbd)
    assert type(copy) is BetaGeo and not hasattr(copy, "result_")
    changed = clone(_WithSetting(ci_level=0.8))
    assert changed.get_params() == {"ci_level": 0.8}


@pytest.mark.parametrize("fixture", ["bgnbd", "gamma_gamma"])
def test_summary_holds_the_fitted_parameters_errors_and_intervals(fixture, request):
    model = request.getfixturevalue(fixture)
    summary = model.summary()
    result = model.result_
    assert list(summary.index) == list(model.param_names)
    assert list(summary.columns) == ["estimate", "std_error", "lower_95", "upper_95"]
    assert summary["estimate"].to_dict() == model.params_
    assert summary["std_error"].to_dict() == result.standard_errors
    log_se = np.sqrt(np.diag(result.covariance_log_params))
    assert np.allclose(summary["lower_95"], summary["estimate"] * np.exp(-Z_95 * log_se), rtol=1e-12)
    assert np.allclose(summary["upper_95"], summary["estimate"] * np.exp(Z_95 * log_se), rtol=1e-12)
    assert (summary["lower_95"] < summary["estimate"]).all() and (summary["estimate"] < summary["upper_95"]).all()
    assert summary.attrs["log_likelihood"] == result.log_likelihood
    assert summary.attrs["customers"] == result.customers


def test_summary_without_covariance_has_nan_errors_and_intervals():
    summary = model_with_params(BetaGeo, ref.BGNBD_CDNOW_SAMPLE).summary()
    assert summary["estimate"].to_dict() == ref.BGNBD_CDNOW_SAMPLE
    assert summary[["std_error", "lower_95", "upper_95"]].isna().all().all()


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_repr_before_fit_is_the_constructor_call(model_class):
    assert repr(model_class()) == f"{model_class.__name__}()"


def test_repr_after_fit_shows_parameters_customers_and_log_likelihood(bgnbd, gamma_gamma):
    assert repr(bgnbd) == ("BetaGeo(r=0.2426, alpha=4.414, a=0.7929, b=2.426; 2,357 customers, log-likelihood -9582.4)")
    assert repr(gamma_gamma).startswith("GammaGamma(p=6.249, q=3.745, gamma=15.45; 946 customers, log-likelihood")
    pareto = model_with_params(ParetoNBD, ref.PARETO_CDNOW_SAMPLE)
    assert repr(pareto) == "ParetoNBD(r=0.553, alpha=10.58, s=0.606, beta=11.67; 0 customers, log-likelihood 0.0)"
    assert repr(_WithSetting(ci_level=0.8)) == "_WithSetting(ci_level=0.8)"


@pytest.mark.parametrize("model_class", list(PURCHASE_PARAMS))
def test_purchase_predictions_of_series_are_series_on_the_customer_index(model_class, cdnow):
    model = model_with_params(model_class, PURCHASE_PARAMS[model_class])
    x, t_x, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    arrays = (x.to_numpy(float), t_x.to_numpy(float), T.to_numpy(float))
    for name, series, array in (
        ("expected_purchases", model.expected_purchases(39.0, x, t_x, T), model.expected_purchases(39.0, *arrays)),
        ("p_alive", model.p_alive(x, t_x, T), model.p_alive(*arrays)),
    ):
        assert isinstance(series, pd.Series) and series.name == name
        assert series.index.equals(cdnow.index)
        assert type(array) is np.ndarray
        assert np.array_equal(series.to_numpy(), array)


def test_expected_spend_of_series_is_a_series_on_the_customer_index(gamma_gamma, cdnow):
    series = gamma_gamma.expected_spend(cdnow["frequency"], cdnow["monetary_value"])
    array = gamma_gamma.expected_spend(cdnow["frequency"].to_numpy(float), cdnow["monetary_value"].to_numpy(float))
    assert isinstance(series, pd.Series) and series.name == "expected_spend"
    assert series.index.equals(cdnow.index)
    assert type(array) is np.ndarray
    assert np.array_equal(series.to_numpy(), array)


def test_from_dict_gives_a_fitted_model(bgnbd):
    rebuilt = BetaGeo.from_dict(json.loads(json.dumps(bgnbd.to_dict())))
    assert rebuilt.result_ == bgnbd.result_
    assert repr(rebuilt) == repr(bgnbd)
    assert math.isfinite(rebuilt.summary().loc["r", "upper_95"])
