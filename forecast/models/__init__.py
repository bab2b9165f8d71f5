"""The purchase models (BG/NBD, MBG/NBD, Pareto/NBD, and the NBD without dropout) and the spend models (Gamma-Gamma,
and the mean spend), and their JSON artifacts.

One model per module on the base classes of ``base``; ``catalog`` names them for the config. lifetimes is
imported only here (``_lifetimes``).
"""

from forecast.models.base import FitResult, PurchaseModel
from forecast.models.bgnbd import BetaGeo
from forecast.models.catalog import (
    MODELS,
    PURCHASE_MODELS,
    fit_models,
    fit_purchase_model,
    fit_spend_model,
    mean_amount_of,
    mean_amount_per_purchase,
    purchase_model,
)
from forecast.models.gamma_gamma import GammaGamma
from forecast.models.mbgnbd import ModifiedBetaGeo
from forecast.models.mean_spend import MeanSpend
from forecast.models.nbd import NBD
from forecast.models.pareto import ParetoNBD

__all__ = [
    "MODELS",
    "NBD",
    "PURCHASE_MODELS",
    "BetaGeo",
    "FitResult",
    "GammaGamma",
    "MeanSpend",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "PurchaseModel",
    "fit_models",
    "fit_purchase_model",
    "fit_spend_model",
    "mean_amount_of",
    "mean_amount_per_purchase",
    "purchase_model",
]
