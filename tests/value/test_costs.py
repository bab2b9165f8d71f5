"""The cost of serving a customer: the survival curve behind it, checked two independent ways (each model's own
closed form of the expected purchases, and a simulation of the purchase-and-dropout process), the literature's
worked example, and the new customer's costs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.integrate import quad

from forecast.models import BetaGeo, ModifiedBetaGeo, ParetoNBD
from forecast.models.nbd import NBD
from forecast.value.clv import purchases_if_alive
from forecast.value.costs import (
    costs_if_alive,
    discounted_alive_months,
    heuristic_costs,
    new_customer_alive_months,
    new_customer_costs,
    survival_if_alive,
)
from forecast.value.uncertainty import discounted_purchases_new
from forecast.value.valuation import Valuation
from tests import reference as ref
from tests.conftest import model_with_params

MODELS = [
    (BetaGeo, ref.BGNBD_CDNOW_SAMPLE),
    (ModifiedBetaGeo, ref.MBGNBD_CDNOW_SAMPLE),
    (ParetoNBD, ref.PARETO_CDNOW_SAMPLE),
]
#: (x, t_x, T) in weeks: a one-time buyer, a regular, a heavy buyer gone quiet, a new customer.
HISTORIES = [(0, 0.0, 39.0), (4, 30.0, 39.0), (20, 10.0, 39.0), (2, 3.0, 4.0)]
WEEKS_PER_MONTH = 365.25 / 12 / 7


def survival(model, x: float, T: float, t: float) -> float:
    return float(survival_if_alive(model, np.array([x]), np.array([T]), t)[0])


@pytest.mark.parametrize(("model_class", "params"), MODELS)
def test_expected_purchases_are_the_integral_of_the_buying_rate_while_alive(model_class, params):
    """E[X(t) | x, t_x, T] = P(alive) (r + x) / (alpha + T) * integral_0^t S'(u) du, S' the survival curve of the
    same model with r + 1 (E[lambda f(lambda)] = (r + x) / (alpha + T) E'[f] under Gamma(r + x + 1, alpha + T)),
    to 1e-8 against the model's own closed form of the expected purchases."""
    model = model_with_params(model_class, params)
    shifted = model_with_params(model_class, {**params, "r": params["r"] + 1})
    for x, t_x, age in HISTORIES:
        integral, _ = quad(lambda u, x=x, age=age: survival(shifted, x, age, u), 0.0, 52.0, epsabs=1e-13, epsrel=1e-12)
        f, T = np.array([x], float), np.array([age])
        p_alive = model.p_alive(f, np.array([t_x]), T)[0]
        expected = model.expected_purchases(52.0, f, np.array([t_x]), T)[0]
        assert p_alive * (params["r"] + x) / (params["alpha"] + age) * integral == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(("model_class", "params"), MODELS)
def test_the_survival_curve_matches_a_simulation_of_the_process(model_class, params):
    """Draw lambda and the dropout rule from the posterior of a customer alive at T with x = 4, T = 39, run the
    process for 26 weeks and count who is still alive: within 4 standard errors of S(26) at 200,000 draws."""
    rng = np.random.default_rng(7)
    n, x, age, t = 200_000, 4, 39.0, 26.0
    lam = rng.gamma(params["r"] + x, 1.0 / (params["alpha"] + age), n)
    if model_class is ParetoNBD:
        mu = rng.gamma(params["s"], 1.0 / (params["beta"] + age), n)
        alive = rng.exponential(1.0 / mu) > t
    else:
        extra = 1 if model_class is ModifiedBetaGeo else 0
        p = rng.beta(params["a"], params["b"] + x + extra, n)
        alive = rng.random(n) < (1 - p) ** rng.poisson(lam * t)  # each purchase is followed by a dropout w.p. p
    expected = survival(model_with_params(model_class, params), x, age, t)
    assert abs(alive.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize(("model_class", "params"), MODELS[:2])
def test_heavy_buyers_far_ahead_have_a_finite_survival_that_falls(model_class, params):
    """scipy's hyp2f1 at -t / (alpha + T) below -1 is inf for 100+ repeat purchases (CDNOW has such customers);
    the transformed form stays finite and falls with time."""
    model = model_with_params(model_class, params)
    curve = [survival(model, 170.0, 71.0, t) for t in (4.35, 156.0, 2000.0, 26_000.0)]
    assert np.isfinite(curve).all() and all(a > b > 0 for a, b in itertools.pairwise(curve))


def test_discounted_alive_months_of_pareto_nbd_match_the_integral_of_its_closed_form():
    """Month k's share alive (Simpson's rule) against the exact integral of ((beta + T) / (beta + T + u))^s over
    the month, discounted at 1% a month over 36 months, to 1e-5 relative; a new customer's (x = 0, T = 0) over 12
    months too."""
    params = ref.PARETO_CDNOW_SAMPLE
    model = model_with_params(ParetoNBD, params)
    valuation = Valuation(horizon_months=36, monthly_discount_rate=0.01, margin=1.0, days_per_unit=7.0)
    s, beta = params["s"], params["beta"]
    for x, _, age in HISTORIES:
        exact = sum(
            1.01**-k
            * quad(
                lambda u, age=age: ((beta + age) / (beta + age + u)) ** s,
                (k - 1) * WEEKS_PER_MONTH,
                k * WEEKS_PER_MONTH,
            )[0]
            / WEEKS_PER_MONTH
            for k in range(1, 37)
        )
        months = discounted_alive_months(model, np.array([x], float), np.array([age]), valuation, [36])[0, 0]
        assert months == pytest.approx(exact, rel=1e-5)
    new = sum(
        1.01**-k * quad(lambda u: (beta / (beta + u)) ** s, (k - 1) * WEEKS_PER_MONTH, k * WEEKS_PER_MONTH)[0]
        for k in range(1, 13)
    )
    twelve = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=1.0, days_per_unit=7.0)
    assert new_customer_alive_months(model, twelve)[-1] == pytest.approx(new / WEEKS_PER_MONTH, rel=1e-5)


def test_the_literatures_worked_example_spends_200000_costs_100000_and_is_worth_100000():
    """ "If one client spent 200,000 over five years and the costs for him during this time amounted to 100,000,
    the client's CLV is 100,000." Two purchases a year of 20,000 each, margin 1, undiscounted: 10 purchases at 5,000
    and 60 active months at 50,000 / 60 cost 100,000, in the heuristic and in the model (an NBD customer, who never
    drops out, with a known rate of 2 a year)."""
    valuation = Valuation(
        horizon_months=60, monthly_discount_rate=0.0, margin=1.0, days_per_unit=7.0,
        cost_per_purchase=5_000.0, cost_per_active_month=50_000.0 / 60,
    )  # fmt: skip
    heuristic = 20_000.0 * 2.0 * 5.0 * valuation.margin
    assert heuristic - heuristic_costs(2.0, 5.0, valuation) == pytest.approx(100_000.0, rel=1e-12)

    weeks_per_year = 365.25 / 7
    model = model_with_params(NBD, {"r": 1e9, "alpha": 1e9 * weeks_per_year / 2.0})
    pairs = np.array([[0.0, 0.0]])
    _, discounted = purchases_if_alive(model, pairs, valuation)
    gross = valuation.margin * 20_000.0 * discounted[0]
    cost = costs_if_alive(model, pairs, valuation, [60], discounted[:, None])[0, 0]
    assert gross == pytest.approx(200_000.0, rel=1e-6)
    assert cost == pytest.approx(100_000.0, rel=1e-6)
    assert gross - cost == pytest.approx(100_000.0, rel=1e-6)


def test_no_costs_cost_nothing():
    valuation = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    model = model_with_params(BetaGeo, ref.BGNBD_CDNOW_SAMPLE)
    assert not valuation.has_costs
    assert (new_customer_costs(model, valuation, discounted_purchases_new(model, valuation)) == 0).all()
    assert heuristic_costs(5.0, 3.0, valuation) == 0


@pytest.mark.parametrize(("model_class", "params"), MODELS)
def test_a_new_customer_pays_for_the_first_purchase_then_for_each_expected_purchase_and_month_alive(
    model_class, params
):
    """Month 0 costs c_p (the first purchase); by month H, c_p (1 + discounted repeat purchases) + c_a x the
    discounted months alive, fewer than P(alive at 0) x the discounted months (MBG/NBD: b / (a + b))."""
    valuation = Valuation(
        horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0,
        cost_per_purchase=2.0, cost_per_active_month=0.5,
    )  # fmt: skip
    model = model_with_params(model_class, params)
    repeat = discounted_purchases_new(model, valuation)
    costs = new_customer_costs(model, valuation, repeat)
    months = new_customer_alive_months(model, valuation)
    assert costs.shape == (13,) and costs[0] == 2.0 and (np.diff(costs) > 0).all()
    assert costs[-1] == pytest.approx(2.0 * (1 + repeat[-1]) + 0.5 * months[-1], rel=1e-12)
    alive_at_start = params["b"] / (params["a"] + params["b"]) if model_class is ModifiedBetaGeo else 1.0
    assert months[0] == 0 and (np.diff(months) > 0).all()
    assert months[-1] < alive_at_start * valuation.discount_factors().sum()
