"""Predictive and heuristic CLV per customer, their intervals, segments, and the budget figures."""
