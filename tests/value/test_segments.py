"""Tests of forecast.value.segments: RFM groups against their where() formulation, and segment totals summed by cell
a few columns at a time against pandas' groupby. (The segment heuristic's worked examples and the RFM grid by
hand are in tests/value/test_budget.py.)"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.data import compress
from forecast.errors import DataError
from forecast.value.segments import (
    ALL,
    ALL_SEGMENTATION,
    RFM_GROUP_GRID,
    RFM_GROUPS,
    RfmCuts,
    SegmentCells,
    rfm_groups,
    segment_table,
    segment_totals,
    segmentation_column,
    segmentation_name,
)


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


@pytest.fixture
def customers() -> pd.DataFrame:
    """60 customers in 3 value tiers (one unused category) and 4 regions (some missing), with two figures."""
    rng = np.random.default_rng(11)
    tiers = pd.Categorical.from_codes(rng.integers(0, 3, 60), categories=["top", "middle", "rest", "unused"])
    regions = pd.array(rng.choice(["north", "south", "east", None], 60), dtype="string")  # not aligned on an index
    return pd.DataFrame(
        {"segment": tiers, "region": regions, "clv": rng.gamma(2.0, 50.0, 60), "revenue": rng.gamma(1.0, 80.0, 60)},
        index=pd.Index([f"c{i:02d}" for i in range(60)], name="customer_id"),
    )


def test_cells_summed_a_column_at_a_time_equal_the_totals_summed_at_once(customers):
    """Sums of one column per call, rolled up per segment, equal segment_totals' sums of all columns at once, bit
    for bit; and the segments' totals equal pandas' groupby of each segmentation (to rounding)."""
    segmentations: list[str | None] = [None, "segment", "region"]
    values = customers[["clv", "revenue"]]
    at_once = segment_totals(customers, segmentations, values)
    cells = SegmentCells.of(customers, segmentations)
    one_by_one = cells.totals({name: cells.sums(values[[name]])[:, 0] for name in values.columns})
    pd.testing.assert_frame_equal(one_by_one, at_once, check_exact=True)
    assert at_once.loc[ALL_SEGMENTATION].index.tolist() == [ALL]
    assert at_once.loc[ALL_SEGMENTATION, "customers"].tolist() == [60]
    for column in segmentations[1:]:
        table = at_once.loc[segmentation_name(column)]
        grouped = customers.groupby(column, observed=True, sort=True)  # categories in their order, text sorted
        assert table.index.tolist() == grouped.size().index.tolist()  # no unused tier, no missing region
        assert table["customers"].tolist() == grouped.size().tolist()
        np.testing.assert_allclose(table[["clv", "revenue"]], grouped[["clv", "revenue"]].sum(), rtol=1e-13)


def test_cell_counts_where_a_mask_holds_count_those_customers(customers):
    """counts(where) is the number of the cell's customers the mask marks: at-risk customers per segment."""
    cells = SegmentCells.of(customers, ["segment"])
    at_risk = customers["clv"].to_numpy() < 80.0
    table = cells.totals({"at_risk": cells.counts(at_risk)}).loc["value_tier"]
    expected = customers[at_risk].groupby("segment", observed=True)["clv"].size()
    assert table["at_risk"].to_dict() == expected.astype(float).to_dict()


def test_segment_table_rows_follow_the_cells_index(customers):
    """The segment table lists everybody, then every segmentation's segments, in the order of
    ``SegmentCells.index``, which is also the order of the interval draws' totals; its CLV totals are the
    per-cell sums rolled up."""
    frame = customers.assign(p_alive=0.5, expected_purchases=1.0, avg_purchase_value=10.0, purchases_per_year=2.0)
    cells = SegmentCells.of(frame, [None, "segment", "region"])
    table = segment_table(frame, ["segment", "region"], lifespan_years=3.0, margin=0.3, cells=cells)
    assert list(zip(table["segmentation"], table["segment"], strict=True)) == cells.index.tolist()
    np.testing.assert_array_equal(table["clv_total"], cells.roll_up(cells.sums(frame[["clv"]]))[:, 0])


def test_segmentations_are_named_for_what_they_are_and_map_back_to_their_columns(customers):
    """Value tiers (column segment) are value_tier, RFM groups (rfm_group) rfm, cohorts cohort, everybody all, the
    data's columns keep their names; each name maps back to its column, and an old label (a column name) to the new
    name."""
    columns: list[str | None] = [None, "segment", "rfm_group", "cohort", "region"]
    names = [segmentation_name(column) for column in columns]
    assert names == [ALL_SEGMENTATION, "value_tier", "rfm", "cohort", "region"] and ALL_SEGMENTATION == "all"
    assert [segmentation_column(name) for name in names] == columns
    assert [segmentation_name(name) for name in names] == names  # current names stay as they are
    table = segment_totals(customers, [None, "segment", "region"], customers[["clv"]])
    assert list(dict.fromkeys(table.index.get_level_values("segmentation"))) == ["all", "value_tier", "region"]


@pytest.mark.parametrize("column", ["value_tier", "rfm", "all"])
def test_a_data_segment_column_named_like_a_toolkit_segmentation_is_refused(customers, column):
    """Two segmentations of one name would merge in the segment tables: the error names the column to rename."""
    frame = customers.assign(**{"rfm_group": customers["region"], column: customers["region"]})
    with pytest.raises(DataError, match=f"both be named {column}.*data.segment_columns"):
        SegmentCells.of(frame, [None, "segment", "rfm_group", column])


def test_rfm_cuts_from_compressed_customers_equal_the_whole_summarys() -> None:
    rng = np.random.default_rng(3)
    count = 5_000
    T = rng.integers(20, 80, count) / 7.0
    frequency = rng.poisson(1.2, count)
    recency = np.where(frequency > 0, np.floor(rng.random(count) * T * 7) / 7.0, 0.0)
    summary = pd.DataFrame({"frequency": frequency, "recency": recency, "T": T})
    rows = summary.assign(since_last=T - recency).groupby(["frequency", "since_last"]).size().reset_index()
    cuts = RfmCuts.from_counts(rows["frequency"].to_numpy(), rows["since_last"].to_numpy(), rows[0].to_numpy())
    assert cuts == RfmCuts.of(summary)
    assert (rfm_groups(summary, cuts) == rfm_groups(summary)).all()
