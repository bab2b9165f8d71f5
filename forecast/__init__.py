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

``config`` (the validated settings) and ``errors`` (the error hierarchy) are shared by all stages.
"""

__version__ = "0.1.0"
