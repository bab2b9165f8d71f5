"""Tests of forecast.segments: RFM groups against their where() formulation. (The segment heuristic's worked
examples and the RFM grid by hand are in tests/test_budget.py.)"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast import compress
from forecast.segments import RFM_GROUP_GRID, RFM_GROUPS, rfm_groups


def rfm_groups_by_where(summary: pd.DataFrame) -> pd.Series:
    """The RFM groups as nested numpy.where over float columns and a grid lookup (the first formulation)."""
    since_last = summary["T"].to_numpy(float) - summary["recency"].to_numpy(float)
    frequency = summary["frequency"].to_numpy(float)
    recent_cut, old_cut = np.quantile(since_last, [1 / 3, 2 / 3])
    recency_score = np.where(since_last <= recent_cut, 3, np.where(since_last > old_cut, 1, 2))
    repeat = frequency[frequency > 0]
    median_repeats = float(np.median(repeat)) if len(repeat) else 0.0
    frequency_score = np.where(frequency == 0, 1, np.where(frequency > median_repeats, 3, 2))
    grid = np.zeros((4, 4), dtype=np.int8)
    for r, row in RFM_GROUP_GRID.items():
        for f, group in row.items():
            grid[r, f] = RFM_GROUPS.index(group)
    groups = pd.Categorical.from_codes(grid[recency_score, frequency_score], categories=RFM_GROUPS, ordered=True)
    return pd.Series(groups, index=summary.index, name="rfm_group")


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from([0.0, 1.0, 2.5, 7.0]), st.sampled_from([7.0, 10.0, 30.0])),
        min_size=1,
        max_size=40,
    ),
    integer_frequency=st.booleans(),
)
def test_rfm_groups_equal_the_nested_where_formulation(rows, integer_frequency):
    """int8 scores set in place, the quantiles of a partitioned copy and an integer frequency compared as it is
    give the groups of the nested where() over float copies, ties at the cuts and at the median included."""
    summary = pd.DataFrame(rows, columns=["frequency", "recency", "T"])
    summary["frequency"] = summary["frequency"].astype(np.int64 if integer_frequency else float)
    before = summary.copy()
    with mock.patch.object(compress, "CHUNK_ROWS", 7):
        groups = rfm_groups(summary)
    pd.testing.assert_series_equal(groups, rfm_groups_by_where(summary))
    pd.testing.assert_frame_equal(summary, before)  # the quantiles partition a copy, not the summary
