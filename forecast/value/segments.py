"""Per-segment totals: predictive beside heuristic CLV, for value tiers and the data's own segments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.typing import DataFrameGroupBy

from forecast.data.compress import (
    as_floats,
    as_numbers,
    code_counts,
    combine_codes,
    label_codes,
    quantile_of_counts,
    sum_cells,
    take,
)
from forecast.errors import DataError
from forecast.value.clv import heuristic_clv

ALL = "all customers"
#: The ``segmentation`` of the segment tables' row for everybody (its segment is ``ALL``).
ALL_SEGMENTATION = "all"
#: The ``segmentation`` of the value tiers (per-customer column ``segment``, ``forecast.value.clv.assign_tiers``).
VALUE_TIERS = "value_tier"
#: The ``segmentation`` of the RFM groups (per-customer column ``rfm_group``, ``rfm_groups``).
RFM = "rfm"
#: The ``segmentation`` of the acquisition cohorts (per-customer column ``cohort``, ``cohorts``).
COHORT = "cohort"
#: The segmentations the toolkit makes, by their per-customer column: the one place their names in the segment
#: tables (segments.csv, the report, the budget table, drift) are set. The per-customer columns keep their names
#: (customers.parquet is a contract); the data's segment columns are named as they are.
SEGMENTATION_NAMES = {"segment": VALUE_TIERS, "rfm_group": RFM, "cohort": COHORT}


def segmentation_name(column: str | None) -> str:
    """A segmentation as the segment tables name it: ``SEGMENTATION_NAMES`` for the toolkit's, the column for the
    data's, ``ALL_SEGMENTATION`` for everybody (None).

    Runs written before the toolkit's segmentations were renamed labelled them by their column (``segment``,
    ``rfm_group``), so this also gives the current name of a label read from an old segment table or drift entry;
    current names are left as they are.
    """
    return ALL_SEGMENTATION if column is None else SEGMENTATION_NAMES.get(column, column)


def segmentation_column(name: str) -> str | None:
    """The per-customer column of a segmentation named as in the segment tables (None for everybody)."""
    if name == ALL_SEGMENTATION:
        return None
    return next((column for column, named in SEGMENTATION_NAMES.items() if named == name), name)


def segment_table(
    customers: pd.DataFrame,
    segmentations: list[str],
    lifespan_years: float,
    margin: float,
    cells: SegmentCells | None = None,
) -> pd.DataFrame:
    """Summarise customers per segment of each segmentation, plus one row for everybody.

    The segment heuristic uses segment averages, as marketing teams compute it:
    mean purchase value x mean purchases per year x lifespan x margin, times the customers.

    Parameters
    ----------
    customers
        Per-customer table with revenue, p_alive, expected_purchases, clv, avg_purchase_value,
        purchases_per_year and the segmentation columns.
    segmentations
        Columns to group by (``segment`` for the value tiers, ``rfm_group``, then any data segment columns); the
        table names them by ``segmentation_name``.
    lifespan_years
        Expected customer lifespan for the heuristic (years).
    margin
        Gross margin as a fraction of spend.
    cells
        The customers' ``SegmentCells`` of ``[None, *segmentations]``, if already found (a run finds them once
        for the segment table, the budget figures and the intervals).

    Returns
    -------
    pandas.DataFrame
        One row per (segmentation, segment), segmentations named by ``segmentation_name``, with customers,
        revenue_to_date, mean_p_alive, expected_purchases, clv_total, avg_purchase_value, purchases_per_year,
        clv_heuristic_total and heuristic_gap (heuristic minus predictive), then ``<name>_total`` for each of
        ``OPTIONAL_SUMMED_COLUMNS`` the customer table has.
    """
    return table_of_totals(customer_totals(customers, segmentations, cells), lifespan_years, margin)


def customer_totals(
    customers: pd.DataFrame, segmentations: list[str], cells: SegmentCells | None = None
) -> pd.DataFrame:
    """The customers and the sums of ``SUMMED_COLUMNS`` (and of the ``OPTIONAL_SUMMED_COLUMNS`` the customer table
    has) per segment of everybody and of every segmentation: what ``table_of_totals`` takes."""
    optional = [name for name in OPTIONAL_SUMMED_COLUMNS if name in customers.columns]
    values = pd.DataFrame({name: as_floats(customers[name]) for name in SUMMED_COLUMNS + optional}, copy=False)
    return segment_totals(customers, [None, *segmentations], values, cells)


def table_of_totals(totals: pd.DataFrame, lifespan_years: float, margin: float) -> pd.DataFrame:
    """The segment table (``segment_table``) of per-segment totals, however an engine added them up.

    Parameters
    ----------
    totals
        Indexed by (segmentation, segment) in the table's order, with ``customers`` and the sums of
        ``SUMMED_COLUMNS`` and of any of ``OPTIONAL_SUMMED_COLUMNS``, under the columns' names.
    """
    optional = [name for name in OPTIONAL_SUMMED_COLUMNS if name in totals.columns]
    totals = totals.reset_index()
    count = totals["customers"]
    table = pd.DataFrame(
        {
            "segmentation": totals["segmentation"],
            "segment": totals["segment"],
            "customers": count,
            "revenue_to_date": totals["revenue"],
            "mean_p_alive": totals["p_alive"] / count,
            "expected_purchases": totals["expected_purchases"],
            "clv_total": totals["clv"],
            "avg_purchase_value": totals["avg_purchase_value"] / count,
            "purchases_per_year": totals["purchases_per_year"] / count,
        }
    )
    table["clv_heuristic_total"] = table["customers"] * heuristic_clv(
        table["avg_purchase_value"], table["purchases_per_year"], lifespan_years, margin
    )
    table["heuristic_gap"] = table["clv_heuristic_total"] - table["clv_total"]
    for name in optional:
        table[f"{name}_total"] = totals[name]
    return table


#: The per-customer columns that the segment table adds up (sums, or means as sums over counts).
SUMMED_COLUMNS = ["revenue", "p_alive", "expected_purchases", "clv", "avg_purchase_value", "purchases_per_year"]
#: Per-customer columns summed when the customer table has them (``forecast.value.clv.score_lifetime``,
#: ``forecast.value.costs.net_columns``).
OPTIONAL_SUMMED_COLUMNS = ["clv_matched", "clv_lifetime", "clv_net", "clv_matched_net"]


def segment_totals(
    customers: pd.DataFrame,
    segmentations: list[str | None],
    values: pd.DataFrame,
    cells: SegmentCells | None = None,
) -> pd.DataFrame:
    """Count the customers and add up ``values`` per segment of every segmentation, in one pass over the rows.

    The customers are grouped once, by cell (their combination of segments, ``SegmentCells``), with pandas'
    compensated sums, more accurate than a running sum over millions of customers; the totals of a segment
    add up its cells.

    Parameters
    ----------
    customers
        Per-customer table with the segmentation columns.
    segmentations
        Columns of ``customers`` (None: everybody, one segment ``ALL``).
    values
        Numeric columns to add up, one row per customer, in the customers' order.
    cells
        ``SegmentCells.of(customers, segmentations)``, if already found.

    Returns
    -------
    pandas.DataFrame
        Indexed by (segmentation, segment) as ``SegmentCells.index``, with ``customers`` (int) and the sums of
        ``values``' columns.
    """
    if cells is None:
        cells = SegmentCells.of(customers, segmentations)
    elif cells.segmentations != segmentations:
        raise ValueError(f"Cells of the segmentations {cells.segmentations} cannot sum by {segmentations}.")
    return cells.totals(dict(zip(values.columns, cells.sums(values).T, strict=True)))


@dataclass(frozen=True)
class SegmentCells:
    """The customers grouped by cell: their combination of segments in every segmentation (``combine_codes``).

    Figures summed over each cell's customers (``counts``, ``sums``) add up to every segment's totals
    (``roll_up``, or ``totals`` with the customer counts and names) without another pass over the customers, so
    the figures can be summed a few columns at a time, each column freed before the next is made. This is the
    one way the segment table, the budget figures and the intervals' per-draw totals are added up per segment.
    """

    cells: np.ndarray
    labels: list[pd.Index]
    cell_codes: list[np.ndarray]
    segmentations: list[str | None]

    @classmethod
    def of(cls, customers: pd.DataFrame, segmentations: list[str | None]) -> SegmentCells:
        """Cells of the segmentation columns of ``customers`` (None: everybody, one segment ``ALL``).

        Raises
        ------
        DataError
            Two segmentations would have the same name in the segment tables (a data segment column named like
            one the toolkit makes, ``SEGMENTATION_NAMES``, or ``all``).
        """
        names = [segmentation_name(column) for column in segmentations]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            taken = ", ".join([ALL_SEGMENTATION, *SEGMENTATION_NAMES.values()])
            raise DataError(
                f"Two segmentations would both be named {', '.join(repeated)} in the segment tables: the names "
                f"{taken} are the toolkit's. Rename that column of data.segment_columns in the data."
            )
        labelled = [segment_codes(customers, column) for column in segmentations]
        cells, cell_codes = combine_codes([codes for codes, _ in labelled], [len(labels) for _, labels in labelled])
        return cls(cells, [labels for _, labels in labelled], cell_codes, list(segmentations))

    @property
    def names(self) -> list[str]:
        """The segmentations as the segment tables name them (``ALL_SEGMENTATION`` for everybody)."""
        return [segmentation_name(column) for column in self.segmentations]

    @property
    def size(self) -> int:
        """Number of cells."""
        return len(self.cell_codes[0])

    @property
    def index(self) -> pd.MultiIndex:
        """(segmentation, segment) of every segment of every segmentation, in the order of ``roll_up``'s rows.

        Segmentations come in their order, and within one the segments in ``groupby(sort=True)`` order
        (categories in their order, other labels sorted as text); only segments that have customers.
        """
        names = [name for name, labels in zip(self.names, self.labels, strict=True) for _ in labels]
        segments = [label for labels in self.labels for label in labels]
        return pd.MultiIndex.from_arrays([names, segments], names=["segmentation", "segment"])

    def counts(self, where: np.ndarray | None = None) -> np.ndarray:
        """Customers per cell; with ``where`` (a mask of the customers), only those it marks."""
        return code_counts(self.cells if where is None else np.where(where, self.cells, -1), self.size)

    def sums(self, values: pd.DataFrame) -> np.ndarray:
        """Compensated sums of ``values``' columns (one row per customer) per cell: shape (cells, columns)."""
        return by_codes(values, self.cells, self.size).sum().to_numpy(dtype=float)

    def roll_up(self, per_cell: np.ndarray) -> np.ndarray:
        """Add figures given per cell up per segment of every segmentation.

        Parameters
        ----------
        per_cell
            Shape (cells, columns): figures summed over each cell's customers.

        Returns
        -------
        numpy.ndarray
            Shape (segments, columns), one row per entry of ``index``.
        """
        return np.vstack(
            [
                sum_cells(per_cell, of_cell, len(labels))
                for labels, of_cell in zip(self.labels, self.cell_codes, strict=True)
            ]
        )

    def totals(self, per_cell: dict[str, np.ndarray]) -> pd.DataFrame:
        """Count the customers and add figures given per cell up per segment of every segmentation.

        Parameters
        ----------
        per_cell
            Figures by name, one value per cell (``counts``, a column of ``sums``).

        Returns
        -------
        pandas.DataFrame
            Indexed by ``index``, with ``customers`` (int) and the figures.
        """
        summed = self.roll_up(np.column_stack([self.counts(), *per_cell.values()]))
        table = pd.DataFrame(summed[:, 1:], index=self.index, columns=list(per_cell))
        table.insert(0, "customers", summed[:, 0].astype(np.int64))
        return table


def segment_codes(customers: pd.DataFrame, column: str | None) -> tuple[np.ndarray, pd.Index]:
    """Segment codes and labels of one segmentation column (``forecast.data.compress.label_codes``).

    None stands for everybody: one segment, ``ALL``.
    """
    if column is None:
        return np.zeros(len(customers), dtype=np.int8), pd.Index([ALL], dtype=str)
    return label_codes(customers[column])


def by_codes(frame: pd.DataFrame, codes: np.ndarray, size: int) -> DataFrameGroupBy:
    """Group the rows by integer codes (0 .. size - 1; -1 left out) in code order, without hashing any label.

    pandas' grouped sums and means are compensated (Kahan) sums, more accurate than ``numpy.bincount``'s
    running sum over millions of customers.
    """
    key = pd.CategoricalIndex(pd.Categorical.from_codes(codes, categories=pd.RangeIndex(size)))
    return frame.groupby(key, observed=False, sort=True)


#: RFM groups by recency score (rows: 3 = most recent third) and frequency score (columns: 1 = one purchase).
RFM_GROUP_GRID = {
    3: {1: "new", 2: "loyal", 3: "champions"},
    2: {1: "one-time", 2: "loyal", 3: "loyal"},
    1: {1: "lapsed", 2: "at risk", 3: "at risk"},
}
RFM_GROUPS = ["champions", "loyal", "new", "at risk", "one-time", "lapsed"]


@dataclass(frozen=True)
class RfmCuts:
    """Where ``rfm_groups`` splits the customers: the times since the last purchase at the first and second thirds
    of the customers, and the median number of repeat purchases of the repeat buyers."""

    recent: float
    old: float
    median_repeats: float

    @classmethod
    def of(cls, summary: pd.DataFrame) -> RfmCuts:
        """The cuts of a whole summary (numpy's linear quantiles of every customer's values)."""
        # One array of the times since the last purchase is partitioned in place (overwrite_input: numpy would
        # otherwise partition a copy).
        recent, old = np.quantile(_since_last(summary), [1 / 3, 2 / 3], overwrite_input=True)
        frequency = as_numbers(summary["frequency"])  # integer counts compare with the median as their floats would
        repeat = frequency[frequency > 0]
        return cls(float(recent), float(old), float(np.median(repeat)) if len(repeat) else 0.0)

    @classmethod
    def from_counts(cls, frequency: np.ndarray, since_last: np.ndarray, customers: np.ndarray) -> RfmCuts:
        """The same cuts from compressed customers: unique (frequency, time since the last purchase) rows with the
        customers each stands for (another engine's summary, which never comes to this process whole)."""
        frequency, since_last = np.asarray(frequency, dtype=float), np.asarray(since_last, dtype=float)
        customers = np.asarray(customers, dtype=np.int64)
        recent, old = (quantile_of_counts(customers, q, since_last) for q in (1 / 3, 2 / 3))
        repeat = frequency > 0
        median = quantile_of_counts(customers[repeat], 0.5, frequency[repeat]) if repeat.any() else 0.0
        return cls(recent, old, median)


def rfm_groups(summary: pd.DataFrame, cuts: RfmCuts | None = None) -> pd.Series:
    """Named RFM-style groups from the observed history alone (no model), so they explain themselves.

    Recency score: the time since the last purchase, T - recency, split into thirds of the customers
    (3 = the most recent third, 1 = the third who bought longest ago). Frequency score: 1 = no repeat
    purchase; 2 = repeat purchases up to the median of the repeat buyers; 3 = more than that median.

    ============  ======================  ======================  ======================
    recency       one purchase (F=1)      some repeats (F=2)      many repeats (F=3)
    ============  ======================  ======================  ======================
    recent (3)    new                     loyal                   champions
    middle (2)    one-time                loyal                   loyal
    long ago (1)  lapsed                  at risk                 at risk
    ============  ======================  ======================  ======================

    ``cuts`` are the whole summary's (``RfmCuts.of``) unless given: a batch of a larger summary takes its cuts.

    Returns
    -------
    pandas.Series
        Ordered categorical named ``rfm_group`` (champions, loyal, new, at risk, one-time, lapsed),
        indexed like ``summary``.
    """
    # Scores are int8, set by the inner condition of where(a, 3, where(b, 1, 2)) first, so that the outer one
    # wins, as it does there.
    cuts = cuts if cuts is not None else RfmCuts.of(summary)
    since_last = _since_last(summary)
    recency_score = np.full(len(since_last), 2, dtype=np.int8)
    np.copyto(recency_score, 1, where=since_last > cuts.old)
    np.copyto(recency_score, 3, where=since_last <= cuts.recent)
    del since_last
    frequency = as_numbers(summary["frequency"])  # integer counts compare with the median as their floats would
    frequency_score = np.full(len(frequency), 2, dtype=np.int8)
    np.copyto(frequency_score, 3, where=frequency > cuts.median_repeats)
    np.copyto(frequency_score, 1, where=frequency == 0)
    # The grid as group numbers (positions in RFM_GROUPS), looked up by (recency score, frequency score).
    grid = np.zeros((4, 4), dtype=np.int8)
    for r, row in RFM_GROUP_GRID.items():
        for f, group in row.items():
            grid[r, f] = RFM_GROUPS.index(group)
    cell = recency_score
    cell *= 4
    cell += frequency_score  # the position of (recency score, frequency score) in the flattened grid
    groups = pd.Categorical.from_codes(take(grid.ravel(), cell), categories=pd.Index(RFM_GROUPS), ordered=True)
    return pd.Series(groups, index=summary.index, name="rfm_group")


def _since_last(summary: pd.DataFrame) -> np.ndarray:
    """Time since each customer's last purchase, T - recency (model time units)."""
    return as_floats(summary["T"]) - as_floats(summary["recency"])


def cohorts(first_purchase: pd.Series, period: str = "quarter") -> pd.Series:
    """Each customer's acquisition cohort: the quarter (``1997-Q1``) or month (``1997-01``) of the first purchase.

    Known the day a customer is acquired, so a cohort is a segment one can bid on. Built from the distinct
    periods only, as a categorical in time order, so millions of customers cost one pass of integer arithmetic.
    """
    days = pd.to_datetime(first_purchase)
    year, month = days.dt.year.to_numpy(), days.dt.month.to_numpy()
    step = 3 if period == "quarter" else 1
    keys = year * 12 + (month - 1) // step * step
    periods, codes = np.unique(keys, return_inverse=True)
    if period == "quarter":
        labels = [f"{key // 12}-Q{key % 12 // 3 + 1}" for key in periods]
    else:
        labels = [f"{key // 12}-{key % 12 + 1:02d}" for key in periods]
    return pd.Series(pd.Categorical.from_codes(codes, pd.Index(labels)), index=first_purchase.index, name="cohort")
