"""Collapse per-customer rows into unique rows with counts, in linear time.

The models are fitted on unique (frequency, recency, T) rows weighted by their counts, and every
unique row is scored once. ``numpy.unique(axis=0)`` sorts the rows lexicographically, comparing row by
row. ``sorted_unique_rows`` ranks each column's values and reads a row's ranks as one number, so no pass sorts
all the rows: the work grows with the rows, not with the rows times their logarithm.
``Histories`` and ``SpendHistories`` find a summary's unique rows once: the fits take their rows and
counts, and the scores and intervals map them back to the customers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

DENSE_KEYS_PER_ROW = 4  # a bincount over all combinations of values, if there are at most this many per row


def as_floats(values: np.ndarray | pd.Series) -> np.ndarray:
    """A float array of the values; for a Series without ``numpy.asarray``.

    On pandas 3, ``numpy.asarray(series)`` builds (and caches on the index) a hash table of the index
    labels, about as large as the ids themselves, kept for as long as the summary lives.
    """
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=float)
    return np.asarray(values, dtype=float)


def as_numbers(values: np.ndarray | pd.Series) -> np.ndarray:
    """The values as a numpy array, as they are when already integers or floats (no float copy), else as floats.

    For comparisons and sums whose results do not depend on the type: an int64 frequency column
    compares with 0 as its float copy would, without the copy's 8 bytes a row.
    """
    array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    return array if array.dtype.kind in "iuf" else as_floats(values)


#: Rows per pass of the chunked helpers below: their temporaries stay a few MB however many customers there are.
CHUNK_ROWS = 1 << 18


def row_chunks(rows: int) -> list[slice]:
    """Consecutive slices of at most ``CHUNK_ROWS`` rows covering ``rows`` rows."""
    return [slice(start, start + CHUNK_ROWS) for start in range(0, rows, CHUNK_ROWS)]


def take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` for a compact integer index (int8 .. int32), a chunk at a time.

    numpy converts an index array to intp before it gathers, a copy of 8 bytes per customer. Chunk by chunk
    that copy stays ``CHUNK_ROWS`` long; the values gathered are the same.
    """
    out = np.empty(len(index), dtype=values.dtype)
    for part in row_chunks(len(index)):
        # mode="wrap" reads -1 as the last value, as indexing does, and (unlike "raise") writes to out unbuffered.
        np.take(values, index[part], out=out[part], mode="wrap")
    return out


def code_counts(codes: np.ndarray, size: int) -> np.ndarray:
    """How many rows have each code 0 .. size - 1 (-1, missing, is not counted), a chunk at a time.

    ``numpy.bincount`` of int8 codes would first copy them all to intp (8 bytes a row).
    """
    counts = np.zeros(size + 1, dtype=np.int64)
    for part in row_chunks(len(codes)):
        shifted = codes[part].astype(np.intp)
        shifted += 1
        counts += np.bincount(shifted, minlength=size + 1)
    return counts[1:]


#: Combined keys stay below this bound (the codes' product of sizes is renumbered before it).
COMBINED_KEY_LIMIT = 2**62


def combine_codes(codes: Sequence[np.ndarray], sizes: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Number the combinations (cells) of several integer codings of the same rows, in linear time.

    Parameters
    ----------
    codes
        Equal-length integer arrays; coding ``i`` takes values -1 (missing) .. ``sizes[i]`` - 1.
    sizes
        Number of codes of every coding.

    Returns
    -------
    (cells, cell_codes)
        ``cells[r]`` is the cell of row ``r`` (0 .. cells - 1, in no particular order); ``cell_codes[i][c]``
        is the code of coding ``i`` shared by every row of cell ``c``. Sums over the rows of each cell then
        give the sums over every code of every coding by summing cells, without a pass over the rows.
    """
    rows = len(codes[0]) if codes else 0
    key = np.zeros(rows, dtype=np.int64)
    radix = 1
    readable = 0  # the codings from this one on can be read back from a cell's key (none is renumbered after it)
    for i, (values, size) in enumerate(zip(codes, sizes, strict=True)):
        if radix * (size + 1) >= COMBINED_KEY_LIMIT:
            key, _ = pd.factorize(key)
            radix = int(key.max(initial=-1)) + 1
            readable = i
        # In place, so that no temporary of the rows' length is made: key = key * (size + 1) + code + 1.
        key *= size + 1
        key += values
        key += 1  # missing (-1) becomes 0
        radix *= size + 1
    if radix <= 4 * max(rows, 1):
        present = np.bincount(key, minlength=radix) > 0
        count = int(present.sum())
        cells = (np.cumsum(present) - 1).astype(small_int(count))[key]
        cell_keys = np.flatnonzero(present)  # cell c is the c-th key present
    else:
        cells, cell_keys = pd.factorize(key)
        count = len(cell_keys)
    del key
    cell_codes: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(codes)
    # A cell's key holds the codes of the codings since the last renumbering as mixed-radix digits (a few
    # operations per cell instead of a pass over the rows per coding).
    place = 1
    for i in reversed(range(readable, len(codes))):
        cell_codes[i] = (cell_keys // place) % (sizes[i] + 1) - 1
        place *= sizes[i] + 1
    for i in range(readable):
        of_cell = np.full(count, -1, dtype=np.int64)
        # Every row of a cell writes the same code, so the order of writes does not matter; by chunks, so that
        # the small cell numbers are not all copied to intp at once.
        for part in row_chunks(rows):
            of_cell[cells[part]] = codes[i][part]
        cell_codes[i] = of_cell
    return cells, cell_codes


def sum_cells(per_cell: np.ndarray, cell_code: np.ndarray, size: int) -> np.ndarray:
    """Add up figures given per cell by one coding's code (``combine_codes``' ``cell_codes[i]``).

    Row ``g`` of the result (``size`` rows, as many columns as ``per_cell``) sums the rows of ``per_cell``
    whose cell has code ``g``; cells with code -1 (missing) are left out.
    """
    totals = np.zeros((size, per_cell.shape[1]))
    member = cell_code >= 0
    np.add.at(totals, cell_code[member], per_cell[member])
    return totals


def small_int(size: int) -> type[np.signedinteger]:
    """The smallest signed integer type that holds the codes -1 .. size - 1 (codes of millions of rows stay small)."""
    for kind in (np.int8, np.int16, np.int32):
        if size <= np.iinfo(kind).max:
            return kind
    return np.int64


def sorted_unique_rows(
    columns: Mapping[str, np.ndarray | pd.Series], weights: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Unique rows of the columns in lexicographic order, each row's unique-row number, and their total weights.

    Each column is factorized with its values' ranks as codes, so a row's codes read as one mixed-radix
    number order the rows like their values. When the columns have few combinations of values (at most
    ``DENSE_KEYS_PER_ROW`` per row, as for frequency, recency and T) a ``bincount`` over those numbers
    finds and counts the unique rows already in order; otherwise the numbers are factorized once more,
    sorted. Either way costs a few hashing passes: no sort of all rows.

    Parameters
    ----------
    columns
        Equal-length numeric columns, by name.
    weights
        What each row stands for (default 1); a unique row's weight is the sum of its rows' weights.

    Returns
    -------
    (unique, codes, counts)
        ``unique``: DataFrame of the unique rows (float columns named as given), sorted by the first
        column, then the second, ...; NaN sorts last. ``codes``: for every input row, the position of its
        unique row (in the smallest integer type that holds them, ``small_int``). ``counts``: float array
        of the unique rows' total weights.
    """
    if not columns:
        raise ValueError("sorted_unique_rows needs at least one column")
    if len(next(iter(columns.values()))) == 0:
        return pd.DataFrame({name: np.empty(0) for name in columns}), np.empty(0, dtype=np.intp), np.empty(0)
    ranked = [ranked_codes(values) for values in columns.values()]
    codes, column_uniques = [column_codes for column_codes, _ in ranked], [uniques for _, uniques in ranked]
    del ranked
    sizes = tuple(len(uniques) for uniques in column_uniques)
    rows = len(codes[0])
    combinations = math.prod(sizes)
    if combinations <= DENSE_KEYS_PER_ROW * rows + 1024:
        key = _lexicographic_key(codes, sizes)  # fewer combinations than int64 holds: the mixed-radix number
        del codes  # the key holds them: the unique rows' codes are read back from their keys
        rows_per_key = np.bincount(key, minlength=combinations)
        present = np.flatnonzero(rows_per_key)
        unique_codes = np.unravel_index(present, sizes)
        if weights is None:
            counts = rows_per_key[present]
        else:
            counts = np.bincount(key, weights=weights, minlength=combinations)[present]
        # Counted, the table becomes each key's unique-row number: a new table of every key would cost the
        # page faults of memory touched for the first time. The numbers are written in the
        # smallest integer type over the start of the counts' buffer (the counts of the keys that are not
        # present are never read), so that the rows' numbers take 4 bytes, not 8.
        group_of_key = rows_per_key.view(small_int(len(present)))[:combinations]
        group_of_key[present] = np.arange(len(present))
        group = group_of_key[key]
    else:
        # pandas.factorize(sort=True) would renumber a second intp copy of the codes: the groups are numbered
        # in order of appearance, counted, and then renumbered by rank into the smallest integer type.
        appearance, keys = pd.factorize(_lexicographic_key(codes, sizes))
        counts = np.bincount(appearance, weights=weights, minlength=len(keys))
        representative = np.empty(len(keys), dtype=np.intp)
        for part in row_chunks(rows):  # any row of a group: all have the group's codes
            representative[appearance[part]] = np.arange(part.start, min(part.stop, rows))
        order = np.argsort(keys, kind="stable")
        group = take(_ranks(order), appearance)
        del appearance
        counts, representative = counts[order], representative[order]
        unique_codes = tuple(column_codes[representative] for column_codes in codes)
    unique = pd.DataFrame(
        {name: uniques[code] for name, uniques, code in zip(columns, column_uniques, unique_codes, strict=True)}
    )
    return unique, group, counts.astype(float)


def ranked_codes(values: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every value's rank among the unique values, and those values sorted (as floats; NaN last).

    The same as ``pandas.factorize(as_floats(values), sort=True, use_na_sentinel=False)``, with the codes in the
    smallest integer type, and without its peak: its sort renumbers a second intp copy of the codes, and an
    integer column would be copied to floats first. Integers are factorized as they are, unless float64
    cannot tell some of them apart.
    """
    array = as_numbers(values)
    appearance, uniques = pd.factorize(array, use_na_sentinel=False)
    floats = np.asarray(uniques, dtype=float)
    if array.dtype.kind != "f" and not np.array_equal(floats.astype(array.dtype), uniques):
        return ranked_codes(as_floats(values))
    order = np.argsort(floats, kind="stable")
    return take(_ranks(order), appearance), floats[order]


def _ranks(order: np.ndarray) -> np.ndarray:
    """The inverse permutation of ``order``, in the smallest integer type: position ``i`` holds the rank of ``i``."""
    ranks = np.empty(len(order), dtype=small_int(len(order)))
    ranks[order] = np.arange(len(order))
    return ranks


def _lexicographic_key(codes: list[np.ndarray], sizes: tuple[int, ...]) -> np.ndarray:
    """One int64 per row that orders the rows like their columns' value ranks ``codes`` (lexicographically).

    Built in place (no intp copy of every column's codes). While the product of the sizes fits in an int64 it is
    ``numpy.ravel_multi_index(codes, sizes)``; beyond, the key is replaced by its ranks before it would overflow.
    """
    key = codes[0].astype(np.int64)
    for column_codes, size in zip(codes[1:], sizes[1:], strict=True):
        if len(key) and key.max() >= np.iinfo(np.int64).max // max(size, 1):
            key = pd.factorize(key, sort=True)[0]  # ranks keep the order and keep key * size below rows * size
        key *= size
        key += column_codes
    return key


@dataclass(frozen=True)
class Histories:
    """The customers' unique (x, t_x, T) rows with their counts, and the unique (x, T) pairs of those rows.

    ``rows`` are sorted lexicographically, as the purchase-model fit takes them (weighted by ``counts``);
    ``rows[row_of_customer]`` is every customer's (frequency, recency, T) and ``pairs[pair_of_row]`` every
    row's (frequency, T), the pairs that ``forecast.value.clv`` evaluates the expectations of an alive customer at.
    """

    rows: np.ndarray
    counts: np.ndarray
    row_of_customer: np.ndarray
    pairs: np.ndarray
    pair_of_row: np.ndarray

    @classmethod
    def from_summary(cls, summary: pd.DataFrame) -> Histories:
        """The unique histories of a summary's frequency, recency and T columns (one row per customer)."""
        columns = {name: summary[name] for name in ("frequency", "recency", "T")}
        unique, row_of_customer, counts = sorted_unique_rows(columns)
        rows = unique.to_numpy()
        pairs, pair_of_row, _ = sorted_unique_rows({"frequency": rows[:, 0], "T": rows[:, 2]})
        return cls(rows, counts, row_of_customer, pairs.to_numpy(), pair_of_row)

    @classmethod
    def from_counts(cls, rows: pd.DataFrame, customers: np.ndarray | pd.Series) -> Histories:
        """The histories of compressed customers (another engine's summary, which never comes here whole): unique
        frequency, recency and T rows in any order with the customers each stands for. There is no customer to
        index (``row_of_customer`` is empty); the fits take the rows and counts as they take a summary's."""
        columns = {name: rows[name] for name in ("frequency", "recency", "T")}
        unique, _, counts = sorted_unique_rows(columns, weights=np.asarray(customers, dtype=float))
        unique_rows = unique.to_numpy()
        pairs, pair_of_row, _ = sorted_unique_rows({"frequency": unique_rows[:, 0], "T": unique_rows[:, 2]})
        return cls(unique_rows, counts, np.empty(0, dtype=np.intp), pairs.to_numpy(), pair_of_row)


@dataclass(frozen=True)
class SpendHistories:
    """The customers' unique (x, m) spend histories, sorted, with counts: ``rows[row_of_customer]`` is every customer's.

    m is the average repeat purchase value, taken as 0 without a repeat purchase (x = 0), where neither the
    Gamma-Gamma fit (repeat buyers only) nor its expectation depends on it.
    """

    rows: np.ndarray
    counts: np.ndarray
    row_of_customer: np.ndarray

    @classmethod
    def from_summary(cls, summary: pd.DataFrame) -> SpendHistories:
        """The unique spend histories of a summary's frequency and monetary_value columns (one row per customer)."""
        # Frequency's sign is read from its own values, and sorted_unique_rows makes its float copy only while
        # it factorizes it: no float copy lives through the whole pass.
        monetary_value = np.where(as_numbers(summary["frequency"]) > 0, as_floats(summary["monetary_value"]), 0.0)
        frequency: np.ndarray | pd.Series = summary["frequency"]
        unique, row_of_customer, counts = sorted_unique_rows({"frequency": frequency, "monetary_value": monetary_value})
        return cls(unique.to_numpy(), counts, row_of_customer)

    @classmethod
    def from_counts(cls, rows: pd.DataFrame, customers: np.ndarray | pd.Series) -> SpendHistories:
        """The spend histories of compressed customers: unique frequency and monetary_value rows (monetary_value 0
        without a repeat purchase) in any order, with the customers each stands for; no customer to index."""
        columns = {name: rows[name] for name in ("frequency", "monetary_value")}
        unique, _, counts = sorted_unique_rows(columns, weights=np.asarray(customers, dtype=float))
        return cls(unique.to_numpy(), counts, np.empty(0, dtype=np.intp))


def distinct_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values in ascending order and how often each occurs, like ``np.unique(values,
    return_counts=True)`` for values without NaN.

    Counted by hashing, then only the distinct values are sorted: ``np.unique`` sorts all the values, though
    millions of customers have only a few hundred distinct ages.
    """
    counts = pd.Series(values, copy=False).value_counts(sort=False).sort_index()
    return counts.index.to_numpy(), counts.to_numpy()


def quantile_of_counts(counts: np.ndarray, q: float, values: np.ndarray | None = None) -> float:
    """``np.quantile(np.repeat(values, counts), q)`` (linear interpolation) without repeating the values: each of the
    distinct ``values`` (default 0, 1, 2, ...; any order) occurring ``counts`` times.

    Only the two values beside the quantile's position are found (from the running counts), so the repeated values
    are never built (8 bytes per customer, and ``np.quantile`` would copy them once more); another engine's
    compressed customers give the same quantile as the whole column would here, to the last bit.
    """
    counts = np.asarray(counts)
    if values is None:
        values = np.arange(len(counts), dtype=float)
    else:
        order = np.argsort(values, kind="stable")
        values, counts = np.asarray(values, dtype=float)[order], counts[order]
    total = int(counts.sum())
    position = q * (total - 1)  # numpy's virtual index for the linear method
    below = math.floor(position)
    ends = np.cumsum(counts)
    low, high = np.searchsorted(ends, [below, min(below + 1, total - 1)], side="right")
    # numpy's own interpolation between the two, at the same fraction.
    return float(np.quantile(np.array([values[low], values[high]], dtype=float), position - below))


def label_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Number the labels of a column in the order ``groupby(sort=True, observed=True)`` gives them.

    Parameters
    ----------
    values
        One label per row: a categorical (its codes are used as they are, without hashing the labels) or
        any other column (its values are hashed and sorted).

    Returns
    -------
    (codes, labels)
        ``codes[i]`` is the position of row ``i``'s label in ``labels`` (-1 when missing); ``labels``
        holds the labels that occur, as text (``str`` of each value): categories in their order, other
        values sorted.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = cast(pd.Categorical, values.array).codes  # the categorical's own small integers (cat.codes copies)
        categories = values.cat.categories
        occurs = code_counts(codes, len(categories)) > 0
        if not occurs.all():
            renumber = np.append(np.cumsum(occurs) - 1, -1).astype(small_int(len(categories)))  # -1 stays -1
            codes = take(renumber, codes)
            categories = categories[occurs]
        return codes, categories.astype(str)
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(small_int(len(uniques))), pd.Index(uniques).astype(str)
