"""Backtests on a holdout period: predictive against heuristic, in proper scores."""
