"""clv-forecast: customer-lifetime-value forecasts from a transaction log.

BG/NBD (purchases, dropout) and Gamma-Gamma (spend) fitted with lifetimes, beside the
heuristic CLV that marketing teams use, with a backtest and budget figures.

The sub-packages are the stages, in data-flow order; a module imports only from the stages before it:

    data        read and check the log, the per-customer summary (DuckDB)
    models      purchase and spend models, their JSON artifacts
    value       predictive and heuristic CLV, intervals, segments, budget figures
    evaluation  backtests scored with proper scores
    report      the HTML report
    batch       the monthly pipeline, the runs registry, outputs, drift
    engines     the same batch on Spark
    cli         the ``forecast`` command, the only place that prints or exits

``config`` (the validated settings) and ``errors`` (the error hierarchy) are shared by all stages; ``api`` is the
Python API, whose names this package exports (imported on first use, so that ``forecast --version`` stays quick):

    summarize, score, run           a log to a summary, a summary to scored customers, a config to a published run
    BetaGeo, ModifiedBetaGeo, ParetoNBD, GammaGamma     the models, with scikit-learn's conventions
    RunConfig, load_config          the run configuration
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "summarize": "forecast.api",
    "score": "forecast.api",
    "run": "forecast.api",
    "BetaGeo": "forecast.models",
    "ModifiedBetaGeo": "forecast.models",
    "ParetoNBD": "forecast.models",
    "GammaGamma": "forecast.models",
    "RunConfig": "forecast.config",
    "load_config": "forecast.config",
}
__all__ = [
    "BetaGeo",
    "GammaGamma",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "RunConfig",
    "__version__",
    "load_config",
    "run",
    "score",
    "summarize",
]

if TYPE_CHECKING:
    from forecast.api import run, score, summarize
    from forecast.config import RunConfig, load_config
    from forecast.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'forecast' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
