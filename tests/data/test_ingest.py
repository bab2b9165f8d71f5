"""Ingest on bad input: every problem ends in a clear DataError or a documented, counted policy.

The hand-made files are in tests/fixtures/bad/; their expected counts and line numbers are read off the
files themselves (line 1 is the header).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.batch.pipeline import default_as_of
from forecast.batch.registry import last_complete_month_end
from forecast.cli import app
from forecast.config import DataConfig
from forecast.data import ingest
from forecast.data.ingest import (
    count_after_as_of,
    count_customers,
    count_each_problem,
    count_problems,
    read_transactions,
)
from forecast.data.simulate import simulate_transactions
from forecast.data.summary import summarize
from forecast.errors import DataError

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "bad"


def read(name: str, **settings):
    return read_transactions(DataConfig(path=str(BAD / name), **settings))


def rows(transactions, sql: str = "SELECT customer_id, ts, amount FROM transactions ORDER BY ALL"):
    return transactions.connection.execute(sql).fetchall()


# --- schema -------------------------------------------------------------------------------------------


def test_misnamed_columns_are_named_with_the_columns_found():
    with pytest.raises(DataError) as error:
        read("misnamed_columns.csv")
    message = str(error.value)
    assert "no column 'customer_id' (data.customer_id), 'timestamp' (data.timestamp)" in message
    assert "Columns found: 'custmer_id', 'Timestamp', 'amount'" in message
    assert "'customer_id' may be 'custmer_id'" in message
    assert "'timestamp' may be 'Timestamp'" in message
    assert "'amount'" not in message.split("Columns found")[0]


def test_missing_order_id_and_segment_columns_are_named():
    with pytest.raises(DataError, match=r"no column 'order' \(data.order_id\), 'region' \(data.segment_columns\[0\]\)"):
        read("duplicates.csv", order_id="order", segment_columns=["region"])


def test_empty_file_is_a_clear_error():
    with pytest.raises(DataError, match=r"empty.csv is empty \(1 file\(s\) of 0 bytes"):
        read("empty.csv")


def test_header_only_file_is_a_clear_error():
    with pytest.raises(DataError, match=r"has no transactions \(no rows after the header; columns customer_id"):
        read("header_only.csv")


def test_folder_without_data_files_is_a_clear_error():
    with pytest.raises(DataError, match=r"holds no data files .* \(it holds README.md\)"):
        read("no_data_folder")


def test_mixed_file_formats_are_refused(tmp_path):
    shutil.copy(BAD / "duplicates.csv", tmp_path / "a.csv")
    duckdb.connect().execute(
        f"COPY (SELECT 'X' AS customer_id, DATE '2020-01-01' AS timestamp, 1.0 AS amount) TO '{tmp_path / 'b.parquet'}'"
    )
    with pytest.raises(DataError, match=r"mixes CSV and Parquet files \(2 files; csv: a.csv; parquet: b.parquet\)"):
        read_transactions(DataConfig(path=str(tmp_path)))


def test_empty_files_among_others_are_skipped_and_reported(tmp_path):
    shutil.copy(BAD / "empty.csv", tmp_path / "2020-01.csv")
    shutil.copy(BAD / "header_only.csv", tmp_path / "2020-02.csv")
    shutil.copy(BAD / "duplicates.csv", tmp_path / "2020-03.csv")
    transactions = read_transactions(DataConfig(path=str(tmp_path)))
    assert transactions.quality.rows == 5
    assert transactions.quality.empty_files == [str(tmp_path / "2020-01.csv")]
    assert any("1 empty file(s) were skipped: 2020-01.csv" in w for w in transactions.quality.warnings)


# --- values: dates and time zones ----------------------------------------------------------------------


def test_impossible_and_unparseable_dates_are_counted_with_line_numbers():
    with pytest.raises(DataError) as error:
        read("bad_dates.csv")
    message = str(error.value)
    assert message.startswith("3 of 6 rows in ")
    assert "first at line 3 '2020-02-30', line 5 'not a date', line 6 '2020-13-01'" in message
    assert "data.invalid_rows: drop" in message


def test_line_numbers_name_the_file_when_there_are_several(tmp_path):
    shutil.copy(BAD / "bad_amounts.csv", tmp_path / "a.csv")
    shutil.copy(BAD / "bad_dates.csv", tmp_path / "b.csv")
    with pytest.raises(DataError, match=r"first at b.csv:3 '2020-02-30', b.csv:5 'not a date'"):
        read_transactions(DataConfig(path=str(tmp_path), invalid_rows="fail"))


def test_line_numbers_stay_exact_on_a_large_multi_file_log(tmp_path):
    """DuckDB reads big CSVs in parallel; the line number must still be the row's line in its own file."""
    for name, size in (("a.csv", 120_000), ("b.csv", 50_000)):
        lines = ["customer_id,timestamp,amount"]
        lines += [f"c{i % 101},2020-01-{1 + i % 28:02d},{i}" for i in range(2, size + 2)]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    transactions = read_transactions(DataConfig(path=str(tmp_path)))
    mismatches = transactions.connection.execute(
        'SELECT count(*), count(*) FILTER (WHERE CAST(amount_raw AS BIGINT) <> "__clv_line") FROM typed_log'
    ).fetchall()[0]
    assert mismatches == (170_000, 0)


def test_invalid_rows_can_be_dropped_and_counted():
    transactions = read("bad_dates.csv", invalid_rows="drop", invalid_rows_max_share=1.0)
    assert transactions.quality.invalid_timestamps == 3
    assert transactions.quality.rows == 6
    assert transactions.quality.rows_used == 3
    assert any("3 rows with an invalid 'timestamp' were dropped" in w for w in transactions.quality.warnings)


def test_offsets_are_converted_and_naive_timestamps_taken_as_utc():
    transactions = read("mixed_timezones.csv")
    assert rows(transactions) == [
        ("A", dt.datetime(2020, 1, 1, 23, 30), 20.0),  # naive: taken as UTC
        ("A", dt.datetime(2020, 1, 2, 4, 30), 10.0),  # -05:00: converted, so it falls on the next UTC day
        ("B", dt.datetime(2020, 1, 1, 10, 0), 5.0),  # Z
        ("B", dt.datetime(2020, 1, 1, 23, 30), 5.0),  # +01:00: the previous UTC day
    ]
    quality = transactions.quality
    assert (quality.timestamps_with_offset, quality.timestamps_without_offset) == (3, 1)
    assert any("3 timestamps carry a UTC offset and 1 do not" in w for w in quality.warnings)


def test_data_timezone_sets_the_calendar_day():
    transactions = read("mixed_timezones.csv", timezone="America/New_York")
    assert rows(transactions) == [
        ("A", dt.datetime(2020, 1, 1, 23, 30), 10.0),  # -05:00 is New York time in January
        ("A", dt.datetime(2020, 1, 1, 23, 30), 20.0),  # naive: taken as New York time
        ("B", dt.datetime(2020, 1, 1, 5, 0), 5.0),
        ("B", dt.datetime(2020, 1, 1, 18, 30), 5.0),
    ]


def test_unknown_timezone_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        DataConfig(path="x.csv", timezone="Mars/Olympus")


# --- values: amounts ----------------------------------------------------------------------------------------


def test_non_numeric_nan_and_infinite_amounts_are_counted_with_line_numbers():
    with pytest.raises(DataError) as error:
        read("bad_amounts.csv")
    message = str(error.value)
    assert message.startswith("5 of 7 rows in ")
    assert "not a finite number (empty, text, NaN or infinite)" in message
    assert "first at line 3 'ten', line 4 'NaN', line 5 'inf', line 6 None, line 7 '1e400'" in message


def test_zero_amounts_count_as_purchases_and_returns_are_netted_into_their_day():
    transactions = read("zero_and_negative.csv")
    assert rows(transactions) == [
        ("A", dt.datetime(2020, 1, 1, 10, 0), 6.0),  # 10 - 4 returned the same day
        ("A", dt.datetime(2020, 1, 10), 0.0),  # zero amount: still a purchase
        ("B", dt.datetime(2020, 1, 3), 8.0),
        ("B", dt.datetime(2020, 1, 8), 6.0),
    ]  # the return of 2020-01-20 refunds more than A's purchase of 2020-01-10: netted to 0, the excess dropped
    quality = transactions.quality
    assert (quality.zero_amounts, quality.negative_amounts) == (1, 2)
    assert (quality.returns_without_purchase, quality.returns_over_purchase) == (0, 1)


def test_netted_return_goes_to_the_last_purchase_of_the_day_at_exact_resolution(write_log):
    path = write_log([("A", "2020-01-01 09:00:00", 10), ("A", "2020-01-01 18:00:00", 5), ("A", "2020-01-01 12:00", -3)])
    transactions = read_transactions(DataConfig(path=str(path)))
    assert rows(transactions) == [
        ("A", dt.datetime(2020, 1, 1, 9, 0), 10.0),
        ("A", dt.datetime(2020, 1, 1, 18, 0), 2.0),
    ]


def test_negative_amounts_drop_policy():
    transactions = read("zero_and_negative.csv", negative_amounts="drop")
    assert [r[2] for r in rows(transactions)] == [10.0, 0.0, 8.0, 6.0]


def test_negative_amounts_fail_policy_names_the_lines():
    with pytest.raises(
        DataError, match=r"2 rows .* negative amount \('amount'; returns\); first at line 3 '-4', line 5 '-5'"
    ):
        read("zero_and_negative.csv", negative_amounts="fail")


# --- values: duplicates ----------------------------------------------------------------------------------------


def test_exact_duplicates_are_kept_and_counted_by_default():
    transactions = read("duplicates.csv")
    assert transactions.quality.duplicate_rows == 1
    assert transactions.quality.rows_used == 5
    assert any("1 rows repeat an earlier row exactly; they were kept" in w for w in transactions.quality.warnings)


def test_duplicates_drop_keeps_the_first_row_of_each_order():
    transactions = read("duplicates.csv", order_id="order_id", duplicates="drop")
    assert rows(transactions) == [
        ("A", dt.datetime(2020, 1, 1), 10.0),
        ("A", dt.datetime(2020, 1, 5), 7.0),
        ("B", dt.datetime(2020, 1, 6), 3.0),
    ]
    assert (transactions.quality.duplicate_rows, transactions.quality.duplicate_order_ids) == (1, 2)


def test_duplicates_fail_names_the_lines():
    with pytest.raises(DataError, match=r"1 rows repeat an earlier row exactly \(first at line 3 'A'\); 2 rows repeat"):
        read("duplicates.csv", order_id="order_id", duplicates="fail")


# --- values: customer ids and as_of ------------------------------------------------------------------------


def test_customer_ids_are_kept_as_given_and_blank_ids_dropped():
    transactions = read("customer_ids.csv")
    ids = rows(transactions, "SELECT customer_id, count(*) FROM transactions GROUP BY ALL ORDER BY ALL")
    assert ids == [(" 7 ", 1), ("007", 2), ("7", 1), ("Клиент-1", 1), ("顧客", 1)]
    quality = transactions.quality
    assert (quality.null_customer_ids, quality.ids_with_surrounding_space) == (2, 1)


def test_transactions_after_as_of_are_counted():
    transactions = count_after_as_of(read("duplicates.csv"), dt.date(2020, 1, 4))
    assert (transactions.quality.as_of, transactions.quality.after_as_of) == ("2020-01-04", 3)
    assert "3 transactions after as_of 2020-01-04 were excluded." in transactions.quality.warnings
    again = count_after_as_of(transactions, dt.date(2020, 1, 31))
    assert again.quality.after_as_of == 0
    assert not any("after as_of" in w for w in again.quality.warnings)


def test_nothing_usable_left_is_a_clear_error(write_log):
    path = write_log([("", "2020-01-01", 5), ("A", "2020-01-02", -3)])
    with pytest.raises(DataError, match="No usable transactions are left"):
        read_transactions(DataConfig(path=str(path)))


def test_parquet_rows_are_numbered_and_typed_timestamps_respected(tmp_path):
    path = tmp_path / "log.parquet"
    duckdb.connect().execute(
        f"""COPY (SELECT * FROM (VALUES ('A', TIMESTAMP '2020-01-01 10:00', 5.0), ('B', NULL, 2.0))
            AS t(customer_id, timestamp, amount)) TO '{path}'"""
    )
    with pytest.raises(DataError, match=r"first at row 2 None"):
        read_transactions(DataConfig(path=str(path)))


def test_whitespace_files_report_physical_line_numbers():
    """CDNOW-style whitespace file: the header and a blank line are counted, so the bad date is on line 4."""
    with pytest.raises(DataError, match=r"1 of 3 rows .* first at line 4 '19970231'"):
        read(
            "whitespace_bad_date.txt",
            format="whitespace",
            columns=["id", "date", "n", "amount"],
            customer_id="id",
            timestamp="date",
            timestamp_format="%Y%m%d",
        )


def test_parquet_timestamps_with_time_zone_are_converted_to_data_timezone(tmp_path):
    path = tmp_path / "log.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""COPY (SELECT 'A' AS customer_id, TIMESTAMPTZ '2020-01-01 23:30:00+00' AS timestamp, 5.0 AS amount)
            TO '{path}'"""
    )
    transactions = read_transactions(DataConfig(path=str(path), timezone="Asia/Tokyo"))
    assert rows(transactions) == [("A", dt.datetime(2020, 1, 2, 8, 30), 5.0)]


def test_parquet_duplicates_are_found_exactly_and_located_by_row(tmp_path: Path):
    """Rows equal in every column are duplicates; rows differing in one column only are not."""
    path = tmp_path / "log.parquet"
    duckdb.sql(
        """COPY (SELECT * FROM (VALUES ('A', TIMESTAMP '2020-01-01', 10.0, 'x'),
                  ('A', TIMESTAMP '2020-01-01', 10.0, 'y'),
                  ('B', TIMESTAMP '2020-01-02', 5.0, 'x'), ('A', TIMESTAMP '2020-01-01', 10.0, 'x'),
                  ('B', TIMESTAMP '2020-01-02', 5.0, 'x'), ('A', TIMESTAMP '2020-01-01', 10.0, 'x'))
                  AS t(customer_id, timestamp, amount, note)) TO '"""
        + str(path)
        + "' (FORMAT parquet)"
    )
    kept = read_transactions(DataConfig(path=str(path)))
    assert (kept.quality.duplicate_rows, kept.quality.rows_used) == (3, 6)
    with pytest.raises(DataError, match=r"3 rows repeat an earlier row exactly \(first at row 4 'A', row 5 'B', row 6"):
        read_transactions(DataConfig(path=str(path), duplicates="fail"))
    dropped = read_transactions(DataConfig(path=str(path), duplicates="drop"))
    assert (dropped.quality.duplicate_rows, dropped.quality.rows_used) == (3, 3)
    assert rows(dropped) == [("A", dt.datetime(2020, 1, 1), 10.0)] * 2 + [("B", dt.datetime(2020, 1, 2), 5.0)]


def test_customers_in_the_log_are_counted_from_the_summary_only_when_nothing_is_after_as_of(tmp_path: Path):
    log = tmp_path / "log.csv"
    log.write_text("customer_id,timestamp,amount\nA,2020-01-01,1\nB,2020-01-02,2\nC,2020-02-03,3\nA,2020-02-04,4\n")
    transactions = read_transactions(DataConfig(path=str(log)))
    assert transactions.quality.customers is None
    assert count_customers(transactions).quality.customers == 3
    up_to_january = count_after_as_of(transactions, dt.date(2020, 1, 31))
    assert count_customers(up_to_january, customers_up_to_as_of=2).quality.customers == 3  # C comes later
    whole = count_after_as_of(transactions, dt.date(2020, 2, 29))
    assert count_customers(whole, customers_up_to_as_of=3).quality.customers == 3


@pytest.mark.parametrize(
    "log",
    [
        "customer_id,timestamp,amount\n7 ,2023-01-05,0\n007,2023-01-06T10:00:00+02:00,3.5\n8,2023-01-07,2\n",
        "customer_id,timestamp,amount\n ,2023-01-05,1\n 7,2023-01-06,2\n\t8,2023-01-07,-1\n8,2023-01-07,4\n",
        "customer_id,timestamp,amount\n7,2023-02-30,1\n8,2023-01-07,NaN\n9,2023-01-07,inf\n,2023-01-08,5\n9,2023-01-09,5\n",
    ],
    ids=["clean-with-trailing-space-zero-and-offset", "leading-spaces-and-returns", "invalid-rows"],
)
def test_problem_counts_from_plain_aggregates_equal_the_counts_under_each_filter(tmp_path: Path, log: str):
    path = tmp_path / "log.csv"
    path.write_text(log, encoding="utf-8")
    transactions = read_transactions(DataConfig(path=str(path), invalid_rows="drop", invalid_rows_max_share=1.0))
    counts = count_problems(transactions.connection, [])
    assert counts._replace(row_hash_sum=None) == count_each_problem(transactions.connection)


# --- issue 21: files and values that gave wrong numbers or tracebacks ---------------------------------------------

#: The first bytes of a macOS AppleDouble file (``._log.csv``): binary, not a CSV.
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\t\x00\x00\x002\x00\x00\x0e\xb0"


def test_hidden_macos_files_in_a_folder_or_glob_are_skipped_and_reported(tmp_path: Path):
    shutil.copy(BAD / "duplicates.csv", tmp_path / "log.csv")
    (tmp_path / "._log.csv").write_bytes(APPLE_DOUBLE)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00\x00")
    for path, hidden in ((tmp_path, "2 hidden file(s)"), (tmp_path / "*.csv", "1 hidden file(s)")):
        transactions = read_transactions(DataConfig(path=str(path)))
        assert transactions.files == [tmp_path / "log.csv"]
        assert transactions.quality.rows == 5
        assert any(w.startswith(hidden) and "._log.csv" in w for w in transactions.quality.warnings)


def test_a_csv_that_is_not_utf8_names_the_file_and_line_and_says_how_to_re_encode():
    with pytest.raises(DataError) as error:
        read("not_utf8.csv", segment_columns=["region"])
    message = str(error.value)
    assert "not_utf8.csv, line 3 is not UTF-8 text" in message
    assert "Re-encode it as UTF-8 (e.g. iconv -f CP1252 -t UTF-8 not_utf8.csv > not_utf8-utf8.csv)" in message
    assert "sniff" not in message.lower() and "\n" not in message


def test_amounts_of_1e29_or_more_are_invalid_amounts_under_invalid_rows():
    """DECIMAL(38, 9), in which the summary sums amounts, holds less than 1e29: larger ones overflowed it."""
    with pytest.raises(DataError) as error:
        read("huge_amounts.csv")
    message = str(error.value)
    assert message.startswith("2 of 5 rows in ")
    assert "1e29 or more in size" in message
    assert "first at line 3 '1e30', line 4 '-2e29'" in message
    transactions = read("huge_amounts.csv", invalid_rows="drop", invalid_rows_max_share=1.0)
    assert transactions.quality.invalid_amounts == 2
    assert summarize(transactions.connection, dt.date(2020, 1, 31), 7.0, "day", [])["monetary_value"].sum() == 0.0
    assert rows(transactions)[1] == ("B", dt.datetime(2020, 1, 4), 9.5e28)


def test_dates_before_1900_or_after_tomorrow_are_invalid_timestamps_and_never_set_as_of():
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    with pytest.raises(DataError) as error:
        read("far_dates.csv")
    message = str(error.value)
    assert message.startswith("2 of 5 rows in ")
    assert f"falls outside 1900-01-01 to {tomorrow}" in message
    assert "first at line 3 '3020-01-01', line 5 '0202-01-01'" in message
    transactions = read("far_dates.csv", invalid_rows="drop", invalid_rows_max_share=1.0)
    assert transactions.quality.invalid_timestamps == 2
    assert (transactions.quality.first_timestamp, transactions.quality.last_timestamp) == (
        "2020-01-01 00:00:00",
        "2020-02-10 00:00:00",
    )
    assert default_as_of(transactions) == dt.date(2020, 1, 31)


def _write_parquet(path: Path, id_sql: str) -> None:
    duckdb.connect().execute(
        f"COPY (SELECT * FROM (VALUES ({id_sql}, DATE '2020-01-01', 1.0), ({id_sql}, DATE '2020-01-05', 2.0)) "
        f"AS t(customer_id, timestamp, amount)) TO '{path}'"
    )


def test_ids_stored_as_numbers_in_one_parquet_file_and_text_in_another_are_refused(tmp_path: Path):
    _write_parquet(tmp_path / "a.parquet", "42::BIGINT")
    _write_parquet(tmp_path / "b.parquet", "'00042'")
    with pytest.raises(DataError, match=r"as text in some files and as numbers in others \(integer: a.parquet; "
                       r"text: b.parquet\).*Export the ids with one type"):  # fmt: skip
        read_transactions(DataConfig(path=str(tmp_path)))


def test_whole_float_ids_are_read_as_integers_with_a_warning(tmp_path: Path):
    _write_parquet(tmp_path / "a.parquet", "42.0::DOUBLE")
    transactions = read_transactions(DataConfig(path=str(tmp_path / "a.parquet")))
    assert {row[0] for row in rows(transactions)} == {"42"}
    assert any("floating-point numbers; they are all whole" in w for w in transactions.quality.warnings)


def test_float_ids_at_or_above_2_to_the_53_are_refused(tmp_path: Path):
    """2^53 + 1 is stored as 2^53: a float id that large may be two customers merged."""
    _write_parquet(tmp_path / "a.parquet", "9007199254740993::DOUBLE")
    with pytest.raises(DataError, match=r"not whole numbers below 2\^53 .*first at row 1 9007199254740992.0.*"
                       r"Export the ids as integers or text"):  # fmt: skip
        read_transactions(DataConfig(path=str(tmp_path / "a.parquet")))


# --- issue 21 audit: far dates, invalid rows refused before the typed log, a log rewritten while read -------------


def simulated_log(path: Path, customers: int = 600, start=dt.date(2019, 1, 1), end=dt.date(2021, 6, 30), **kwargs):
    """A simulated log sorted by time, written as CSV (line = row index + 2); returned as the frame written."""
    frame = simulate_transactions(customers, start=start, end=end, seed=3, **kwargs)
    frame = frame.sort_values("timestamp", ignore_index=True)
    frame.to_csv(path, index=False)
    return frame


def with_dates(path: Path, frame, dates: dict[int, str]) -> Path:
    """``frame`` written to ``path`` with the timestamps of some rows (by index) replaced."""
    frame = frame.copy()
    for index, date in dates.items():
        frame.loc[index, "timestamp"] = pd.Timestamp(date)
    frame.to_csv(path, index=False)
    return path


def test_a_row_dated_years_after_the_rest_stops_the_run_quoting_its_line(tmp_path: Path, monkeypatch):
    """The audit's case: one row dated years after a log ending 2021-06 gave exit 0, as_of in the row's month and a
    predictive CLV a small fraction of the true one (807 for 46,935). It is an invalid row (data.invalid_rows: fail):
    exit 2 quoting its line, nothing written."""
    monkeypatch.chdir(tmp_path)
    log = with_dates(tmp_path / "log.csv", simulated_log(tmp_path / "clean.csv"), {1000: "2024-11-15 10:00"})
    (tmp_path / "run.yaml").write_text(
        f"data: {{path: {log}}}\ntime_unit: week\nmargin: 0.5\noutput: runs\nmodels_dir: models\n", encoding="utf-8"
    )
    outcome = CliRunner().invoke(app, ["run", "run.yaml"])
    message = " ".join(outcome.output.split())
    assert outcome.exit_code == 2, outcome.output
    assert "1 of 2,300 rows in" in message and "far outside the bulk of the log" in message
    assert "first at line 1002 '2024-11-15 10:00:00'" in message
    assert "data.invalid_rows: drop" in message and "Traceback" not in message
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()


def test_far_dates_before_or_after_the_bulk_are_refused_or_dropped_and_counted(tmp_path: Path):
    """A lone 1970-01-01 (a placeholder) and a 2024 (a typing error) in 2,300 rows of 2019-2021."""
    clean = simulated_log(tmp_path / "clean.csv")
    log = with_dates(tmp_path / "log.csv", clean, {1000: "2024-11-15 10:00", 1500: "1970-01-01"})
    with pytest.raises(DataError) as error:
        read_transactions(DataConfig(path=str(log)))
    assert "2 of 2,300 rows" in str(error.value)
    assert "first at line 1002 '2024-11-15 10:00:00', line 1502 '1970-01-01 00:00:00'" in str(error.value)
    transactions = read_transactions(DataConfig(path=str(log), invalid_rows="drop"))
    quality = transactions.quality
    assert (quality.far_dates, quality.invalid_timestamps, quality.invalid_rows) == (2, 2, 2)
    assert quality.rows_used == 2_298
    dropped = clean.drop(index=[1000, 1500])["timestamp"]
    assert (quality.first_timestamp, quality.last_timestamp) == (str(dropped.min()), str(dropped.max()))
    assert [w for w in quality.warnings if "far outside the bulk" in w] == [
        w for w in quality.warnings if w.startswith("2 rows were dropped (data.invalid_rows: drop)")
    ]
    assert default_as_of(transactions) == dt.date(2021, 5, 31)


def test_a_log_whose_customers_arrive_steadily_over_five_years_is_unaffected(tmp_path: Path):
    """Its first year is thin (a few rows a week), but no year passes without a purchase: nothing is a far date."""
    frame = simulated_log(
        tmp_path / "log.csv", 2000, start=dt.date(2016, 1, 1), end=dt.date(2020, 12, 31), acquisition_days=5 * 365
    )
    assert (frame["timestamp"].dt.year == 2016).mean() < 0.15
    transactions = read_transactions(DataConfig(path=str(tmp_path / "log.csv")))
    quality = transactions.quality
    assert quality.far_dates == quality.invalid_rows == 0 and quality.rows_used == len(frame)
    assert (quality.first_timestamp, quality.last_timestamp) == (
        str(frame["timestamp"].min()),
        str(frame["timestamp"].max()),
    )
    assert default_as_of(transactions) == dt.date(2020, 12, 31)


def test_default_as_of_never_jumps_to_a_lone_row_after_a_small_log(tmp_path: Path):
    """In 130 rows one row is no tiny share, so ingest keeps it; the default as_of still ends where the rest ends,
    and the row is counted as after as_of."""
    frame = simulated_log(tmp_path / "clean.csv", 30)
    log = with_dates(tmp_path / "log.csv", frame, {len(frame) - 1: "2024-11-15"})
    transactions = read_transactions(DataConfig(path=str(log)))
    as_of = default_as_of(transactions)
    assert as_of == last_complete_month_end(frame["timestamp"].iloc[-2]) == dt.date(2021, 5, 31)
    assert transactions.quality.far_dates == 0 and transactions.quality.last_timestamp == "2024-11-15 00:00:00"
    after = int((frame["timestamp"].iloc[:-1] >= pd.Timestamp(2021, 6, 1)).sum()) + 1
    assert count_after_as_of(transactions, as_of).quality.after_as_of == after


def _bad_last_row(path: Path, rows: int, value: str) -> None:
    """A log of ``rows`` rows whose last row's amount is ``value`` (as text in Parquet too)."""
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT 'c' || (i % 997) AS customer_id, CAST(DATE '2020-01-01' + CAST(i % 500 AS INT) AS VARCHAR)
                         AS timestamp, CASE WHEN i = {rows - 1} THEN '{value}' ELSE CAST(i % 50 + 0.5 AS VARCHAR) END
                         AS amount
                  FROM range({rows}) t(i) ORDER BY i) TO '{path}'"""
    )


@pytest.mark.parametrize("name", ["log.csv", "log.parquet"])
def test_invalid_rows_are_refused_before_the_typed_log_is_built(tmp_path: Path, name: str):
    """Under data.invalid_rows: fail one scan of the raw log finds the bad amount on the last line; the refusal,
    with the exact line, comes before the typed log is made, hashed, counted or searched for duplicates."""
    path = tmp_path / name
    _bad_last_row(path, 60_000, "12.x5")
    con = duckdb.connect()
    with pytest.raises(DataError) as error:
        read_transactions(DataConfig(path=str(path)), con)
    place = "line 60001" if name.endswith(".csv") else "row 60000"
    assert str(error.value).startswith(f"1 of 60,000 rows in {path} have an amount ('amount') that is not a finite")
    assert f"first at {place} '12.x5'. Fix or remove those rows" in str(error.value)
    assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == []
    assert "typed_log" not in {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}


def _rewrite_in_place(path: Path) -> None:
    """Overwrite ``path`` in place (same inode) as a writer still at work would leave it: cut in half."""
    data = path.read_bytes()
    with path.open("r+b") as file:
        file.truncate(len(data) // 2)
        if path.suffix == ".csv":
            file.seek(len(data) // 2)
            file.write(b"\n" + b"x" * 10 + b"\n")


@pytest.mark.parametrize("name", ["log.csv", "log.parquet"])
def test_a_log_rewritten_in_place_while_it_is_read_is_reported_as_changed(tmp_path: Path, name: str, monkeypatch):
    """DuckDB said 'No magic bytes ... LINE 1: ... ^^^' or dumped its CSV sniffer's 26 lines; the cause is the
    file changing after it was opened, and the message says so in one paragraph."""
    path = tmp_path / name
    _bad_last_row(path, 5_000, "1.5")
    real_open_log = ingest.open_log

    def open_then_rewrite(*args, **kwargs):
        source = real_open_log(*args, **kwargs)
        _rewrite_in_place(path)
        return source

    monkeypatch.setattr(ingest, "open_log", open_then_rewrite)
    with pytest.raises(DataError) as error:
        read_transactions(DataConfig(path=str(path)))
    assert str(error.value) == (
        f"The input file {path} was replaced or rewritten while the run read it; nothing was written. Run again "
        "when the file is complete (write new logs beside the old one and rename them into place)."
    )


def test_duckdb_errors_are_quoted_to_their_first_paragraph(tmp_path: Path):
    """A row with more fields than the header past the sniffer's sample, and a file that is not Parquet: DuckDB's
    first paragraph, without its list of fixes, its reader settings or the query under a caret."""
    ragged = tmp_path / "ragged.csv"
    rows = "".join(f"c{i % 50},2020-01-{1 + i % 28:02d},{i % 7}.5\n" for i in range(30_000))
    ragged.write_text("customer_id,timestamp,amount\n" + rows + "B,2020-01-02,2,9,9\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_transactions(DataConfig(path=str(ragged)))
    assert str(error.value).startswith(
        f"Cannot read {ragged}: Invalid Input Error: CSV Error on Line: 30002 Original Line: B,2020-01-02,2,9,9 "
        "Expected Number of Columns: 3 Found: 4"
    )
    not_parquet = tmp_path / "log.parquet"
    not_parquet.write_text("customer_id,timestamp,amount\n7,2020-01-01,1\n", encoding="utf-8")
    with pytest.raises(DataError) as other:
        read_transactions(DataConfig(path=str(not_parquet)))
    assert str(other.value).startswith(f"Cannot read {not_parquet} as parquet: Invalid Input Error: No magic bytes")
    for message in (str(error.value), str(other.value)):
        assert "\n" not in message and "Possible fixes" not in message and "LINE 1" not in message
        assert message.endswith("and the file.")
