"""Real exports as they come: unit price x quantity, row filters, float-written ids, returns days after the
purchase, and a ceiling on the invalid rows that may be dropped. Each log is hand-built with its exact answer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from forecast.config import DataConfig
from forecast.data.ingest import read_transactions
from forecast.errors import DataError


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def day_totals(transactions) -> list[tuple[str, dt.date, float]]:
    return transactions.connection.execute(
        "SELECT customer_id, CAST(ts AS DATE), round(sum(amount), 9) FROM transactions GROUP BY ALL ORDER BY ALL"
    ).fetchall()


INVOICE_HEADER = "Invoice,StockCode,Quantity,InvoiceDate,Price,Customer ID,Country"
INVOICE_LINES = [
    "536365,85123A,6,12/01/2010 08:26,2.55,17850.0,United Kingdom",
    "536365,71053,6,12/01/2010 08:26,3.39,17850.0,United Kingdom",
    "536365,POST,1,12/01/2010 08:26,18.00,17850.0,United Kingdom",
    "536366,22633,6,12/01/2010 08:28,1.85,,United Kingdom",  # guest order: no customer id
    "536367,84879,32,12/05/2010 09:00,1.69,13047.0,France",
    "C536379,84879,-8,12/20/2010 10:00,1.69,13047.0,France",  # refunds part of the order of 12/05, 15 days later
    "536390,22960,4,12/20/2010 11:00,4.25,17850.0,United Kingdom",
    "C536400,22960,-2,03/30/2011 12:00,4.25,17850.0,United Kingdom",  # 100 days after the last purchase: dropped
]


def invoice_config(tmp_path: Path, **settings) -> DataConfig:
    path = write_csv(tmp_path / "export.csv", INVOICE_HEADER, INVOICE_LINES)
    return DataConfig.model_validate(
        {
            "path": str(path), "customer_id": "Customer ID", "timestamp": "InvoiceDate", "amount": "Price",
            "quantity": "Quantity", "timestamp_format": "%m/%d/%Y %H:%M",
            "exclude": [{"column": "StockCode", "in": ["POST", "M", "BANK CHARGES"]}], **settings,
        }
    )  # fmt: skip


def test_an_invoice_line_export_becomes_netted_purchase_days_per_customer(tmp_path):
    transactions = read_transactions(invoice_config(tmp_path))
    assert day_totals(transactions) == [
        ("13047", dt.date(2010, 12, 5), round(32 * 1.69 - 8 * 1.69, 9)),  # the refund of 12/20 netted into 12/05
        ("17850", dt.date(2010, 12, 1), round(6 * 2.55 + 6 * 3.39, 9)),  # postage left out
        ("17850", dt.date(2010, 12, 20), 17.0),  # the refund 100 days later is past data.return_window_days
    ]
    quality = transactions.quality
    assert quality.rows == 8
    assert (quality.excluded_rows, quality.excluded_by_filter) == (1, {"StockCode in [POST, M, BANK CHARGES]": 1})
    assert (quality.null_customer_ids, quality.float_text_ids, quality.negative_amounts) == (1, 6, 2)
    assert (quality.returns_without_purchase, quality.returns_over_purchase) == (1, 0)
    messages = " ".join(quality.warnings)
    assert "1 rows were left out by data.exclude (1 where StockCode in [POST, M, BANK CHARGES])" in messages
    assert "read as integers ('13085')" in messages
    assert "up to 90 days before them (data.return_window_days)" in messages


def test_a_longer_return_window_nets_the_late_refund(tmp_path):
    transactions = read_transactions(invoice_config(tmp_path, return_window_days=120))
    assert ("17850", dt.date(2010, 12, 20), 8.5) in day_totals(transactions)
    assert transactions.quality.returns_without_purchase == 0


def test_filters_compare_text_and_count_each_filter(tmp_path):
    config = invoice_config(
        tmp_path,
        exclude=[
            {"column": "Invoice", "starts_with": "C"},
            {"column": "Country", "equals": "France"},
            {"column": "Quantity", "in": [6]},  # numbers in the config are compared as text
        ],
    )
    quality = read_transactions(config).quality
    assert quality.excluded_by_filter == {
        "Invoice starts with 'C'": 2, "Country equals 'France'": 2, "Quantity in [6]": 3,
    }  # fmt: skip
    assert quality.excluded_rows == 6  # the French refund matches two filters and is left out once
    assert quality.negative_amounts == 0


def test_a_filter_on_a_missing_column_is_named(tmp_path):
    config = invoice_config(tmp_path, exclude=[{"column": "Stock Code", "equals": "POST"}])
    with pytest.raises(DataError, match=r"no column 'Stock Code' \(data.exclude\[0\].column\).*'StockCode'"):
        read_transactions(config)


def test_a_filter_that_leaves_nothing_says_so(tmp_path):
    config = invoice_config(tmp_path, exclude=[{"column": "Country", "in": ["United Kingdom", "France"]}])
    with pytest.raises(DataError, match=r"data\.exclude left out every one of the 8 rows"):
        read_transactions(config)


@pytest.mark.parametrize(
    ("filter_", "problem"),
    [
        ({"column": "a"}, "exactly one of 'equals', 'starts_with' or 'in'"),
        ({"column": "a", "equals": "x", "in": ["y"]}, "exactly one of"),
        ({"column": "a", "in": []}, "'in' needs at least one value"),
        ({"column": "a", "contains": "x"}, "contains"),
    ],
)
def test_a_malformed_filter_is_a_config_error(filter_, problem):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        DataConfig.model_validate({"path": "x.csv", "exclude": [filter_]})


def test_ids_are_read_as_whole_numbers_only_when_every_id_is_one(tmp_path):
    mixed = write_csv(
        tmp_path / "mixed.csv", "customer_id,timestamp,amount", ["12.0,2020-01-01,1", "A1.0,2020-01-02,2"]
    )
    transactions = read_transactions(DataConfig(path=str(mixed)))
    assert [row[0] for row in day_totals(transactions)] == ["12.0", "A1.0"]
    assert transactions.quality.float_text_ids == 0
    zeros = write_csv(tmp_path / "zeros.csv", "customer_id,timestamp,amount", ["007,2020-01-01,1", "7,2020-01-02,2"])
    assert [row[0] for row in day_totals(read_transactions(DataConfig(path=str(zeros))))] == ["007", "7"]


def test_a_return_nets_into_the_purchase_of_its_order_when_order_ids_are_mapped(tmp_path):
    path = write_csv(
        tmp_path / "orders.csv",
        "customer_id,timestamp,amount,order",
        ["A,2020-01-01,10,o1", "A,2020-01-05,20,o2", "A,2020-01-09,-4,o1", "A,2020-01-09,-1,o9"],
    )
    transactions = read_transactions(DataConfig(path=str(path), order_id="order"))
    # o1's refund goes to o1's day; o9 has no purchase, so its refund goes to the most recent purchase day
    assert day_totals(transactions) == [("A", dt.date(2020, 1, 1), 6.0), ("A", dt.date(2020, 1, 5), 19.0)]


def test_dropping_more_invalid_rows_than_the_ceiling_is_an_error(tmp_path):
    lines = [f"c{i},2020-01-{i + 1:02d},5" for i in range(20)] + ["x,13/01/2020,5", "y,14/01/2020,5"]
    path = write_csv(tmp_path / "swapped.csv", "customer_id,timestamp,amount", lines)
    with pytest.raises(DataError, match=r"2 of 22 rows .* \(9.1%\) are invalid, more than data.invalid_rows_max_share"):
        read_transactions(DataConfig(path=str(path), invalid_rows="drop"))
    quality = read_transactions(DataConfig(path=str(path), invalid_rows="drop", invalid_rows_max_share=0.1)).quality
    assert (quality.invalid_timestamps, quality.rows_used) == (2, 20)
