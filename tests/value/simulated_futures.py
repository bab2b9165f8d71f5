"""An independent check of the predictive intervals: every customer's future simulated whole, draw by draw.

The product adds the customers' own randomness to a total through per-customer variances
(``forecast.value.process``); this simulates every customer's purchases and spend under each parameter draw instead,
far slower, and the tests compare the two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.models import GammaGamma, PurchaseModel
from forecast.value.uncertainty import parameter_draws


def _future_purchases(
    model: PurchaseModel,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    horizon: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate each customer's number of purchases in (T, T + horizon] from the model, given the history."""
    params = model.params_
    alive = rng.random(len(x)) < model.p_alive(x, t_x, T)
    rate = rng.gamma(params["r"] + x, 1.0 / (params["alpha"] + T))
    if model.name == "pareto":
        death_rate = rng.gamma(params["s"], 1.0 / (params["beta"] + T))
        active_time = np.minimum(horizon, rng.exponential(1.0 / death_rate))
        return np.where(alive, rng.poisson(rate * active_time), 0)
    # BG/NBD drops out after a repeat purchase with probability p; MBG/NBD also at the first purchase.
    survived = x + 1 if model.name == "mbgnbd" else x
    dropout = rng.beta(params["a"], params["b"] + survived)
    purchases_until_death = rng.geometric(dropout)
    return np.where(alive, np.minimum(rng.poisson(rate * horizon), purchases_until_death), 0)


def predictive_totals(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    horizon: float,
    draws: int = 200,
    seed: int = 0,
    parameter_uncertainty: bool = True,
) -> pd.DataFrame:
    """Simulate the customers' total purchases and revenue over the next ``horizon`` time units.

    Per draw: parameters from the sampling distribution (as in ``clv_draws``), then every customer's future
    from the model given the history: alive with probability P(alive); if alive, a purchase rate from
    Gamma(r + x, alpha + T), a dropout probability from Beta(a, b + x) (Pareto/NBD: a death rate from
    Gamma(s, beta + T)); purchases are Poisson while alive; spend per purchase is Gamma(p, nu) with
    nu ~ Gamma(q + p x, gamma + x m). The quantiles of the totals form a prediction interval that covers
    both parameter uncertainty and the customers' own randomness (not model misspecification).

    Parameters
    ----------
    summary
        Per-customer summary (frequency, recency, T, monetary_value), indexed by customer_id.
    purchases, spend
        The fitted models.
    horizon
        Length of the future period in model time units.
    draws
        Number of simulated futures.
    seed
        Seed of the random generator.
    parameter_uncertainty
        False keeps the parameters at their estimates (only the customers' own randomness).

    Returns
    -------
    pandas.DataFrame
        One row per draw, columns purchases and revenue (currency).

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", section 3 (the BG/NBD process);
    Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (1a) and (4).
    """
    rng = np.random.default_rng(seed)
    if parameter_uncertainty:
        purchase_models = parameter_draws(purchases, draws, rng)
        spend_models = parameter_draws(spend, draws, rng)
    else:
        purchase_models, spend_models = [purchases] * draws, [spend] * draws
    x = summary["frequency"].to_numpy(float)
    t_x = summary["recency"].to_numpy(float)
    T = summary["T"].to_numpy(float)
    m = np.where(x > 0, summary["monetary_value"].to_numpy(float), 0.0)
    totals = np.empty((draws, 2))
    for i, (purchase_model, spend_model) in enumerate(zip(purchase_models, spend_models, strict=True)):
        count = _future_purchases(purchase_model, x, t_x, T, horizon, rng)
        p, q, gamma = (spend_model.params_[k] for k in ("p", "q", "gamma"))
        nu = rng.gamma(q + p * x, 1.0 / (gamma + x * m))
        buyers = count > 0
        revenue = rng.gamma(p * count[buyers], 1.0 / nu[buyers])
        totals[i] = count.sum(), revenue.sum()
    return pd.DataFrame(totals, columns=["purchases", "revenue"]).rename_axis("draw")
