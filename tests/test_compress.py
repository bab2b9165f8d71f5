"""Linear-time row compression: the same unique rows and counts as numpy.unique, and weighted fits that
equal fits on the expanded rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.compress import combine_codes, group_codes, label_codes, unique_with_counts
from forecast.estimators import BetaGeo, GammaGamma, unique_rows


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.5, 1.5, np.nan]), st.integers(0, 2)),
                min_size=1, max_size=60))  # fmt: skip
def test_unique_with_counts_matches_numpy_unique(rows: list[tuple[int, float, int]]) -> None:
    frame = pd.DataFrame(rows, columns=["x", "y", "z"]).astype(float)
    unique, codes, counts = unique_with_counts({c: frame[c].to_numpy() for c in frame.columns})
    np.testing.assert_array_equal(unique.to_numpy()[codes], frame.to_numpy())  # every row maps to its own values
    assert counts.sum() == len(frame)
    reference = np.unique(frame.fillna(-1.0).to_numpy(), axis=0)
    assert len(unique) == len(reference)
    assert not unique.fillna(-1.0).duplicated().any()


def test_group_codes_number_groups_in_order_of_first_appearance() -> None:
    codes, first = group_codes({"a": np.array([3.0, 1.0, 3.0, 2.0, 1.0]), "b": np.array([0.0, 0.0, 0.0, 5.0, 0.0])})
    np.testing.assert_array_equal(codes, [0, 1, 0, 2, 1])
    np.testing.assert_array_equal(first, [0, 1, 3])


def test_combine_codes_gives_every_combination_its_own_cell() -> None:
    first = np.array([0, 1, 0, 1, -1, 0], dtype=np.int8)
    second = np.array([2, 2, 2, 0, 1, -1])
    cells, cell_codes = combine_codes([first, second], [2, 3])
    pairs = list(zip(first.tolist(), second.tolist(), strict=True))
    assert len(set(cells.tolist())) == len(set(pairs))  # one cell per distinct (first, second), -1 included
    for row, cell in enumerate(cells):
        assert (cell_codes[0][cell], cell_codes[1][cell]) == pairs[row]


def test_label_codes_follow_groupby_order_and_drop_missing_and_unused_labels() -> None:
    text = pd.Series(["b", None, "a", "b"], dtype="string")
    codes, labels = label_codes(text)
    assert labels.tolist() == ["a", "b"] and codes.tolist() == [1, -1, 0, 1]
    ordered = pd.Series(pd.Categorical(["y", "x", None], categories=["z", "y", "x"], ordered=True))
    codes, labels = label_codes(ordered)
    assert labels.tolist() == ["y", "x"] and codes.tolist() == [0, 1, -1]  # category order; unused "z" dropped
    codes, labels = label_codes(pd.Series([2020.0, np.nan, 2019.0]))
    assert labels.tolist() == ["2019.0", "2020.0"] and codes.tolist() == [1, -1, 0]


def test_unique_rows_sums_weights_and_sorts_rows() -> None:
    unique, weights = unique_rows({"f": [2, 0, 2, 1], "m": [5.0, 0.0, 5.0, 3.0]}, weights=[1.0, 4.0, 2.0, 3.0])
    assert unique.to_numpy().tolist() == [[0.0, 0.0], [1.0, 3.0], [2.0, 5.0]]
    assert weights.tolist() == [4.0, 3.0, 3.0]


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([0.0, -0.0, 0.5, 1.5, -2.0, np.nan]), st.integers(0, 2)),
        min_size=1,
        max_size=60,
    ),
    weighted=st.booleans(),
    dense=st.booleans(),
)
def test_sorted_unique_rows_equal_sorted_groups_with_summed_weights(
    rows: list[tuple[int, float, int]], weighted: bool, dense: bool
) -> None:
    """Both ways to number the rows (a bincount over all value combinations, or a second factorization)
    give the unique rows sorted like pandas' groupby (NaN last) with each group's weights summed in row order,
    and every row the position of its own unique row."""
    from unittest import mock

    from forecast import compress

    frame = pd.DataFrame(rows, columns=["x", "y", "z"]).astype(float)
    weights = np.linspace(0.5, 3.0, len(frame)) if weighted else None
    with mock.patch.object(compress, "DENSE_KEYS_PER_ROW", 4 if dense else -(10**9)):
        unique, codes, counts = compress.sorted_unique_rows({c: frame[c] for c in frame.columns}, weights)
    groups = frame.assign(w=1.0 if weights is None else weights).groupby(["x", "y", "z"], dropna=False, sort=True)
    expected = groups["w"].sum()
    pd.testing.assert_frame_equal(unique, expected.index.to_frame(index=False))
    np.testing.assert_allclose(counts, expected.to_numpy(), rtol=1e-14)  # pandas sums with compensation
    np.testing.assert_array_equal(unique.to_numpy()[codes], frame.to_numpy())  # NaN equals NaN, -0.0 equals 0.0


def test_sorted_unique_rows_of_nothing_is_empty() -> None:
    from forecast.compress import sorted_unique_rows

    unique, codes, counts = sorted_unique_rows({"x": np.array([]), "y": np.array([])})
    assert list(unique.columns) == ["x", "y"] and len(unique) == 0 and len(codes) == 0 and len(counts) == 0


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    from forecast.config import load_config
    from forecast.ingest import read_transactions
    from forecast.rfm import summarize
    from tests.conftest import CONFIGS

    config = load_config(CONFIGS / "cdnow_sample.yaml")
    assert config.as_of is not None
    return summarize(read_transactions(config.data).connection, config.as_of, 7.0)


def test_weighted_fit_on_compressed_rows_equals_fit_on_every_customer(cdnow_summary: pd.DataFrame) -> None:
    """A fit from (unique row, count) pairs, as the Spark engine sends them, equals the per-customer fit."""
    summary = cdnow_summary
    per_customer = BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])
    counted = summary.groupby(["frequency", "recency", "T"]).size().reset_index(name="n").sample(frac=1, random_state=3)
    compressed = BetaGeo().fit(counted["frequency"], counted["recency"], counted["T"], weights=counted["n"])
    assert compressed.params_ == per_customer.params_  # identical unique rows in identical order: same bits
    spend_rows = summary[summary["frequency"] > 0].groupby(["frequency", "monetary_value"]).size().reset_index()
    spend = GammaGamma().fit(spend_rows["frequency"], spend_rows["monetary_value"], weights=spend_rows[0])
    reference = GammaGamma().fit(summary["frequency"], summary["monetary_value"])
    for name, value in reference.params_.items():
        assert spend.params_[name] == pytest.approx(value, rel=1e-12)


def test_fit_without_the_autograd_hessian_gives_lifetimes_parameters_bit_for_bit(cdnow_summary: pd.DataFrame) -> None:
    """Skipping lifetimes' unused autograd Hessian leaves its maximisation, so its parameters, unchanged.

    MBG/NBD is fitted by lifetimes (Pareto/NBD keeps lifetimes' own _fit); BG/NBD and Gamma-Gamma by the
    NumPy objectives, checked against lifetimes in tests/test_estimators_fast.py.
    """
    import warnings

    from forecast.estimators import purchase_model

    model = purchase_model("mbgnbd")
    ours = model.fit(cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"])
    unique, weights = unique_rows(
        {"frequency": cdnow_summary["frequency"], "recency": cdnow_summary["recency"], "T": cdnow_summary["T"]}
    )
    fitter = model.fitter_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fitter.fit(unique["frequency"], unique["recency"], unique["T"], weights=weights)
    lifetimes_params = dict(zip(model.param_names, fitter.params_.to_numpy().tolist(), strict=True))
    assert ours.params_ == lifetimes_params
