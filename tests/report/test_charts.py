"""Tests of forecast.report.charts: the one chart style every chart is rendered in."""

from __future__ import annotations

import re

import numpy as np

from forecast.report import charts


def test_charts_are_inline_svg_with_glyphs_as_paths_and_an_accessible_name() -> None:
    """No XML prologue (the SVG is inlined in HTML), no <text> (it needs no font), a role and a label."""
    svg = charts.period_transactions(["0", "1", "2+"], np.array([5.0, 3.0, 1.0]), np.array([4.5, 3.2, 1.3]), "BG/NBD")
    assert svg.startswith('<svg role="img" aria-label=') and 'data-chart="period_transactions"' in svg
    assert "<?xml" not in svg and "<text" not in svg
    assert charts.ACTUAL in svg and charts.PREDICTIVE in svg


def test_two_charts_in_one_page_never_point_into_each_other() -> None:
    """Clip paths and markers, which other elements point to, get ids salted with the chart's name; only glyph
    definitions, identical wherever they appear, repeat."""
    draw = {"predictive": np.array([3.0, 2.0]), "heuristic": np.array([4.0, 1.0])}
    first = charts.decile_chart(["1", "2"], draw, np.array([3.5, 1.5]), "revenue")
    second = charts.paired_bars(["a", "b"], np.array([1.0, 2.0]), np.array([2.0, 3.0]), name="drift_segments",
                                title="t", first_label="previous", second_label="current")  # fmt: skip
    pointed_to = [
        {name for name in re.findall(r'(?:url\(#|href="#)([^")]+)', svg) if not name.startswith("DejaVu")}
        for svg in (first, second)
    ]
    assert pointed_to[0] and pointed_to[1] and not pointed_to[0] & pointed_to[1]


def test_the_same_figure_gives_the_same_svg_text() -> None:
    """No date or random id in the output: a re-run writes the same bytes."""
    drawings = [charts.spend_fit(np.array([10.0, 12.0, 30.0]), np.array([1, 2, 1]), np.linspace(0.1, 40, 50),
                                 np.ones(50) / 40) for _ in range(2)]  # fmt: skip
    assert drawings[0] == drawings[1]
