"""The purchase models (BG/NBD, MBG/NBD, Pareto/NBD) and the Gamma-Gamma spend model, and their JSON artifacts.

One model per module on the base classes of ``base``; ``catalog`` names them for the config. lifetimes is
imported only here (``_lifetimes``).
"""

from forecast.models.base import FitResult, PurchaseModel
from forecast.models.bgnbd import BetaGeo
from forecast.models.catalog import PURCHASE_MODELS, fit_models, fit_purchase_model, purchase_model
from forecast.models.gamma_gamma import GammaGamma, fit_spend_model
from forecast.models.mbgnbd import ModifiedBetaGeo
from forecast.models.pareto import ParetoNBD

__all__ = [
    "PURCHASE_MODELS",
    "BetaGeo",
    "FitResult",
    "GammaGamma",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "PurchaseModel",
    "fit_models",
    "fit_purchase_model",
    "fit_spend_model",
    "purchase_model",
]
