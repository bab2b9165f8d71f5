"""Linear-time row compression: the same unique rows and counts as numpy.unique, weighted fits that
equal fits on the expanded rows, and unique histories shared by the fits and the scores."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.data import compress
from forecast.data.compress import (
    Histories,
    SpendHistories,
    as_floats,
    code_counts,
    combine_codes,
    distinct_counts,
    label_codes,
    quantile_of_counts,
    ranked_codes,
    small_int,
    take,
)
from forecast.models import BetaGeo, GammaGamma
from forecast.models.fitting import unique_rows


def test_combine_codes_gives_every_combination_its_own_cell() -> None:
    first = np.array([0, 1, 0, 1, -1, 0], dtype=np.int8)
    second = np.array([2, 2, 2, 0, 1, -1])
    cells, cell_codes = combine_codes([first, second], [2, 3])
    pairs = list(zip(first.tolist(), second.tolist(), strict=True))
    with mock.patch.object(compress, "CHUNK_ROWS", 4):  # the cells' codes are scattered by chunks
        chunked_cells, chunked_codes = combine_codes([first, second], [2, 3])
    np.testing.assert_array_equal(chunked_cells, cells)
    for codes, chunked in zip(cell_codes, chunked_codes, strict=True):
        np.testing.assert_array_equal(codes, chunked)
    assert len(set(cells.tolist())) == len(set(pairs))  # one cell per distinct (first, second), -1 included
    for row, cell in enumerate(cells):
        assert (cell_codes[0][cell], cell_codes[1][cell]) == pairs[row]


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    rows=st.integers(1, 40),
    key_limit=st.sampled_from([compress.COMBINED_KEY_LIMIT, 8, 30]),
)
def test_combine_codes_cells_hold_each_rows_codes(
    data: st.DataObject, sizes: list[int], rows: int, key_limit: int
) -> None:
    """Every row's codes are its cell's codes and equal codes share a cell, whether the cells' codes are read
    back from the combined keys or, before a renumbering (a small key limit), gathered from the rows."""
    codes = [np.array(data.draw(st.lists(st.integers(-1, size - 1), min_size=rows, max_size=rows))) for size in sizes]
    with mock.patch.object(compress, "COMBINED_KEY_LIMIT", key_limit):
        cells, cell_codes = combine_codes(codes, sizes)
    rows_codes = list(zip(*(c.tolist() for c in codes), strict=True))
    assert len(set(cells.tolist())) == len(set(rows_codes)) == len(cell_codes[0])
    for row, cell in enumerate(cells.tolist()):
        assert tuple(int(of_cell[cell]) for of_cell in cell_codes) == rows_codes[row]


def test_label_codes_follow_groupby_order_and_drop_missing_and_unused_labels() -> None:
    text = pd.Series(["b", None, "a", "b"], dtype="string")
    codes, labels = label_codes(text)
    assert labels.tolist() == ["a", "b"] and codes.tolist() == [1, -1, 0, 1]
    ordered = pd.Series(pd.Categorical(["y", "x", None], categories=["z", "y", "x"], ordered=True))
    with mock.patch.object(compress, "CHUNK_ROWS", 2):  # counted and renumbered by chunks
        codes, labels = label_codes(ordered)
    assert labels.tolist() == ["y", "x"] and codes.tolist() == [0, 1, -1]  # category order; unused "z" dropped
    codes, labels = label_codes(pd.Series([2020.0, np.nan, 2019.0]))
    assert labels.tolist() == ["2019.0", "2020.0"] and codes.tolist() == [1, -1, 0]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-5, 5), min_size=1, max_size=30),
    index=st.lists(st.integers(-1, 29), max_size=40),
    kind=st.sampled_from([np.int8, np.int16, np.int32, np.intp]),
)
def test_take_and_code_counts_equal_indexing_and_bincount_across_chunks(
    values: list[float], index: list[int], kind: type[np.signedinteger]
) -> None:
    """The chunked gather and count (7 rows a chunk here) equal numpy's whole-array indexing and bincount."""
    array = np.array(values)
    codes = np.array([i % len(values) if i >= 0 else -1 for i in index], dtype=kind)
    with mock.patch.object(compress, "CHUNK_ROWS", 7):
        np.testing.assert_array_equal(take(array, codes), array[codes])  # -1 reads the last value, as indexing
        counts = code_counts(codes, len(values))
    np.testing.assert_array_equal(counts, np.bincount(codes.astype(np.intp) + 1, minlength=len(values) + 1)[1:])


@settings(max_examples=80, deadline=None)
@given(
    floats=st.lists(st.sampled_from([0.0, -0.0, 0.5, 1.5, -2.0, 1e300, np.nan, np.inf]), min_size=1, max_size=40),
    integers=st.lists(st.sampled_from([0, 3, -7, 2**53, 2**53 + 1, 2**60, -(2**62)]), min_size=1, max_size=40),
)
def test_ranked_codes_equal_pandas_sorted_factorize_of_the_floats(floats: list[float], integers: list[int]) -> None:
    """Ranks and sorted uniques as pandas.factorize(sort=True) of the float values gives them: NaN last, -0.0 and
    0.0 one value, and integers that float64 cannot tell apart (2**53 and 2**53 + 1) one value."""
    for values in (np.array(floats), np.array(integers, dtype=np.int64), pd.Series(integers, dtype=np.int64)):
        with mock.patch.object(compress, "CHUNK_ROWS", 7):
            codes, uniques = ranked_codes(values)
        expected_codes, expected_uniques = pd.factorize(as_floats(values), sort=True, use_na_sentinel=False)
        np.testing.assert_array_equal(codes, expected_codes)
        np.testing.assert_array_equal(uniques, expected_uniques)
        assert codes.dtype == small_int(len(uniques))


@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=300),
    st.floats(min_value=0.0, max_value=1.0),
)
@settings(max_examples=300, deadline=None)
def test_quantile_of_counts_equals_numpys_quantile_of_the_values(values: list[int], q: float) -> None:
    counts = np.bincount(np.array(values))
    assert quantile_of_counts(counts, q) == float(np.quantile(np.array(values, dtype=float), q))


@given(
    st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=60),
    st.sampled_from([1.0, 7.0, 3.0, 30.4375]),
    st.sampled_from([1 / 3, 2 / 3, 0.5, 0.1, 0.9]),
)
@settings(max_examples=300, deadline=None)
def test_quantile_of_counts_of_distinct_values_in_any_order_is_numpys_to_the_bit(
    values: list[int], divisor: float, q: float
) -> None:
    """Another engine's RFM cuts come from compressed customers (distinct values, their counts, in its order): they
    must be numpy's cuts to the last bit, or a customer at a cut falls in another group there."""
    full = np.array(values, dtype=float) / divisor
    distinct, counts = np.unique(full, return_counts=True)
    assert quantile_of_counts(counts[::-1], q, distinct[::-1]) == np.quantile(full, q)


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
    integer_x=st.booleans(),
)
def test_sorted_unique_rows_equal_sorted_groups_with_summed_weights(
    rows: list[tuple[int, float, int]], weighted: bool, dense: bool, integer_x: bool
) -> None:
    """Both ways to number the rows (a bincount over all value combinations, or a second factorization)
    give the unique rows sorted like pandas' groupby (NaN last) with each group's weights summed in row order,
    and every row the position of its own unique row, in the smallest integer type."""
    frame = pd.DataFrame(rows, columns=["x", "y", "z"]).astype(float)
    weights = np.linspace(0.5, 3.0, len(frame)) if weighted else None
    columns = {c: frame[c] for c in frame.columns}
    if integer_x:
        columns["x"] = frame["x"].astype(np.int64)  # as a summary's frequency: factorized without a float copy
    with (
        mock.patch.object(compress, "DENSE_KEYS_PER_ROW", 4 if dense else -(10**9)),
        mock.patch.object(compress, "CHUNK_ROWS", 7),
    ):
        unique, codes, counts = compress.sorted_unique_rows(columns, weights)
    assert codes.dtype == small_int(len(unique))
    groups = frame.assign(w=1.0 if weights is None else weights).groupby(["x", "y", "z"], dropna=False, sort=True)
    expected = groups["w"].sum()
    pd.testing.assert_frame_equal(unique, expected.index.to_frame(index=False))
    np.testing.assert_allclose(counts, expected.to_numpy(), rtol=1e-14)  # pandas sums with compensation
    np.testing.assert_array_equal(unique.to_numpy()[codes], frame.to_numpy())  # NaN equals NaN, -0.0 equals 0.0


def test_sorted_unique_rows_of_nothing_is_empty() -> None:
    from forecast.data.compress import sorted_unique_rows

    unique, codes, counts = sorted_unique_rows({"x": np.array([]), "y": np.array([])})
    assert list(unique.columns) == ["x", "y"] and len(unique) == 0 and len(codes) == 0 and len(counts) == 0


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    from forecast.config import load_config
    from forecast.data.ingest import read_transactions
    from forecast.data.summary import summarize
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
    NumPy objectives, checked against lifetimes in tests/models/test_fast_fits.py.
    """
    import warnings

    from forecast.models import purchase_model

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


def reversed_unique_rows(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy.unique's unique rows in reverse order, each row's position among them, and their counts."""
    unique, inverse, counts = np.unique(np.column_stack(columns), axis=0, return_inverse=True, return_counts=True)
    return unique[::-1], len(unique) - 1 - inverse.ravel(), counts[::-1].astype(float)


def reordered_histories(summary: pd.DataFrame) -> tuple[Histories, SpendHistories]:
    """The histories found by numpy.unique, their unique rows in reverse order: no result may depend on it."""
    rows, row_of_customer, counts = reversed_unique_rows(
        [summary[n].to_numpy(float) for n in ("frequency", "recency", "T")]
    )
    pairs, pair_of_row, _ = reversed_unique_rows([rows[:, 0], rows[:, 2]])
    frequency = summary["frequency"].to_numpy(float)
    monetary_value = np.where(frequency > 0, summary["monetary_value"].to_numpy(float), 0.0)
    spend_rows, row_of_spend, spend_counts = reversed_unique_rows([frequency, monetary_value])
    return (
        Histories(rows, counts, row_of_customer, pairs, pair_of_row),
        SpendHistories(spend_rows, spend_counts, row_of_spend),
    )


@pytest.mark.parametrize("model_name", ["bgnbd", "mbgnbd", "pareto"])
def test_fits_scores_and_intervals_on_shared_histories_equal_the_separate_computations(
    cdnow_summary: pd.DataFrame, model_name: str
) -> None:
    """One Histories and SpendHistories feed the fits, the scores and the intervals. The fits equal the fits
    on the customers' columns bit for bit (the same sorted unique rows and counts go into the same
    minimisation); scores and intervals equal those indexed by numpy.unique's histories in reverse order to 1e-12."""
    from forecast.models import fit_models, purchase_model
    from forecast.value.clv import score_customers
    from forecast.value.segments import SegmentCells
    from forecast.value.uncertainty import clv_draws, has_covariance
    from forecast.value.valuation import Valuation

    summary = cdnow_summary
    histories, spend_histories = Histories.from_summary(summary), SpendHistories.from_summary(summary)
    for found in (histories, spend_histories):  # each customer's unique row, numbered in 2 or 4 bytes
        assert found.row_of_customer.dtype == small_int(len(found.rows))
    columns = ["frequency", "recency", "T"]
    np.testing.assert_array_equal(histories.rows[histories.row_of_customer], summary[columns].to_numpy(float))
    purchases, spend = fit_models(summary, model_name, histories, spend_histories)
    alone = purchase_model(model_name).fit(summary["frequency"], summary["recency"], summary["T"])
    assert purchases.result_ == alone.result_  # parameters, log-likelihood, covariance: every bit
    usable = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    assert spend.result_ == GammaGamma().fit(usable["frequency"], usable["monetary_value"]).result_

    weekly = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    args = (summary, purchases, spend, weekly)
    earlier = reordered_histories(summary)
    scores = score_customers(*args, histories, spend_histories)
    pd.testing.assert_frame_equal(scores, score_customers(*args, *earlier), rtol=1e-12, atol=0)
    if has_covariance(purchases) and has_covariance(spend):
        tiers = pd.DataFrame({"tier": pd.qcut(scores["clv"].rank(method="first"), 4, labels=False)})
        cells = SegmentCells.of(tiers, [None, "tier"])
        shared = clv_draws(*args, cells, draws=20, histories=histories, spend_histories=spend_histories)
        separate = clv_draws(*args, cells, draws=20, histories=earlier[0], spend_histories=earlier[1])
        pd.testing.assert_frame_equal(shared.customers, separate.customers, rtol=1e-12, atol=0)
        pd.testing.assert_frame_equal(shared.clv_totals, separate.clv_totals, rtol=1e-12, atol=0)


def test_distinct_counts_match_numpy_unique() -> None:
    values = np.random.default_rng(3).integers(0, 90, 10_000) / 7.0
    expected_values, expected_counts = np.unique(values, return_counts=True)
    found_values, found_counts = distinct_counts(values)
    np.testing.assert_array_equal(found_values, expected_values)
    np.testing.assert_array_equal(found_counts, expected_counts)
