"""Collapse per-customer rows into unique rows with counts, in linear time.

The models are fitted on unique (frequency, recency, T) rows weighted by their counts, and every
unique row is scored once. ``numpy.unique(axis=0)`` sorts the rows lexicographically (10 s for
3.4 million customers on two cores); hashing each column with ``pandas.factorize`` and combining the
codes takes well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def as_floats(values: np.ndarray | pd.Series) -> np.ndarray:
    """A float array of the values; for a Series without ``numpy.asarray``.

    On pandas 3, ``numpy.asarray(series)`` builds (and caches on the index) a hash table of the index
    labels: 230 MB for 3.4 million customer ids, kept for as long as the summary lives.
    """
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=float)
    return np.asarray(values, dtype=float)


def group_codes(columns: Mapping[str, np.ndarray | pd.Series]) -> tuple[np.ndarray, np.ndarray]:
    """Give every row the number of its unique combination of values.

    Parameters
    ----------
    columns
        Equal-length numeric columns, by name.

    Returns
    -------
    (codes, first)
        ``codes[i]`` is the group of row ``i`` (0 .. groups - 1, numbered in order of first appearance);
        ``first[g]`` is the position of the first row of group ``g``.
    """
    arrays = [as_floats(values) for values in columns.values()]
    if not arrays:
        raise ValueError("group_codes needs at least one column")
    codes, _ = pd.factorize(arrays[0], use_na_sentinel=False)
    for values in arrays[1:]:
        column_codes, uniques = pd.factorize(values, use_na_sentinel=False)
        # Re-factorize the combined key after every column so that it stays below rows**2 (no int64 overflow).
        codes, _ = pd.factorize(codes * len(uniques) + column_codes)
    # factorize numbers groups in order of first appearance, so the first rows come out in group order.
    first = np.flatnonzero(~pd.Series(codes, copy=False).duplicated().to_numpy())
    return codes, first


def unique_with_counts(columns: Mapping[str, np.ndarray | pd.Series]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Unique rows of the columns, each row's unique-row number, and the count of every unique row.

    Returns
    -------
    (unique, codes, counts)
        ``unique``: DataFrame of the unique rows (float columns named as given, in order of first
        appearance); ``codes``: for every input row, the position of its unique row; ``counts``: float
        array of how many input rows each unique row stands for.
    """
    codes, first = group_codes(columns)
    unique = pd.DataFrame({name: as_floats(values)[first] for name, values in columns.items()})
    counts = np.bincount(codes, minlength=len(first)).astype(float)
    return unique, codes, counts
