"""lifetimes and the optimiser it uses, imported once and without changing the process's warning filters.

This package is the only place that imports lifetimes. lifetimes supplies the conditional-expectation formulas
(MBG/NBD's and Pareto/NBD's in forms rewritten here to stay finite for heavy buyers) and fits MBG/NBD and
Pareto/NBD (maximum likelihood; Pareto/NBD on the stable likelihood of ``forecast.models.pareto``). BG/NBD and
Gamma-Gamma are fitted by lifetimes' own minimisation (same objective, start, method and tolerance) with a NumPy
log-likelihood and its analytic gradient, several times faster on millions of customers.
"""

import warnings

with warnings.catch_warnings():
    # On import lifetimes sets a pandas option that pandas 3 removed (a Pandas4Warning) and switches FutureWarnings
    # off for the whole process; catch_warnings restores the filters as they were.
    warnings.simplefilter("ignore")
    from autograd import value_and_grad
    from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
    from lifetimes.fitters import BaseFitter
    from lifetimes.utils import ConvergenceError, _check_inputs
    from scipy.optimize import minimize

__all__ = [
    "BaseFitter",
    "BetaGeoFitter",
    "ConvergenceError",
    "GammaGammaFitter",
    "ModifiedBetaGeoFitter",
    "ParetoNBDFitter",
    "_check_inputs",
    "minimize",
    "value_and_grad",
]
