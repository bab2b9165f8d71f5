"""clv-forecast: customer-lifetime-value forecasts from a transaction log.

BG/NBD (purchases, dropout) and Gamma-Gamma (spend) fitted with lifetimes, beside the
heuristic CLV that marketing teams use, with a backtest and budget figures.
"""

__version__ = "0.1.0"
