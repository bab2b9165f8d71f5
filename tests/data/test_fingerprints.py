"""The three hashes of a run: the input files' SHA-256, the fingerprint of the rows up to as_of, a file's SHA-256."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest

from forecast.config import DataConfig
from forecast.data.fingerprints import file_sha256, input_files_sha256, rows_up_to_as_of_fingerprint
from forecast.data.ingest import count_after_as_of, read_transactions

HEADER = "customer_id,timestamp,amount\n"
REPEATED_ROW = HEADER + "7,2023-01-05,1\n7,2023-01-05,1\n8,2023-01-07,2\n"
WITH_RETURN = HEADER + "7,2023-01-05,4\n7,2023-01-05,-1\n8,2023-01-07,2\n"


def read_log_text(path: Path, text: str, **settings):
    path.write_text(text, encoding="utf-8")
    return read_transactions(DataConfig(path=str(path), **settings))


def test_input_files_sha256_hashes_every_file_name_and_its_bytes_in_order(tmp_path: Path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(b"customer_id,timestamp,amount\n7,2023-01-05,1\n")
    second.write_bytes(b"customer_id,timestamp,amount\n8,2023-01-06,2\n")
    expected = hashlib.sha256(b"a.csv" + first.read_bytes() + b"b.csv" + second.read_bytes()).hexdigest()
    assert input_files_sha256([first, second]) == expected
    assert input_files_sha256([second, first]) != expected


def test_file_sha256_is_the_sha256_of_the_file_bytes(tmp_path: Path):
    path = tmp_path / "model.json"
    path.write_bytes(b'{"name": "bgnbd"}' * 100_000)  # more than one block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_rows_up_to_as_of_fingerprint_ignores_row_order_and_later_rows_but_not_an_edit(tmp_path: Path):
    as_of = dt.date(2023, 1, 31)
    rows = ["7,2023-01-05,1\n", "8,2023-01-07,2.5\n", "7,2023-01-09,3\n"]
    base = rows_up_to_as_of_fingerprint(read_log_text(tmp_path / "a.csv", HEADER + "".join(rows)), as_of)
    reordered_and_later = HEADER + "".join(reversed(rows)) + "9,2023-02-01,4\n"
    assert rows_up_to_as_of_fingerprint(read_log_text(tmp_path / "b.csv", reordered_and_later), as_of) == base
    edited = HEADER + "".join(rows).replace("2.5", "2.6")
    changed = rows_up_to_as_of_fingerprint(read_log_text(tmp_path / "c.csv", edited), as_of)
    assert changed["as_of_sha256"] != base["as_of_sha256"]
    assert set(base) == {"rows_up_to_as_of", "as_of_sha256", "fingerprint_method"}
    assert base["rows_up_to_as_of"] == 3


@pytest.mark.parametrize(
    ("log", "settings", "summed_while_checking"),
    [
        ("customer_id,timestamp,amount,region\n7,2023-01-05,1,north\n8,2023-01-07,2.5,south\n7,2023-01-09,0,north\n",
         {"segment_columns": ["region"]}, True),
        (REPEATED_ROW, {"duplicates": "keep"}, True),
        (REPEATED_ROW, {"duplicates": "drop"}, False),
        (WITH_RETURN, {"negative_amounts": "net"}, False),
        (WITH_RETURN, {"negative_amounts": "drop"}, False),
        ("customer_id,timestamp,amount\n7,2023-01-05,4\n,2023-01-05,1\n8,2023-01-07,x\n",
         {"invalid_rows": "drop", "invalid_rows_max_share": 1.0}, False),
    ],
    ids=["clean-with-segment", "duplicates-kept", "duplicates-dropped", "returns-netted", "returns-dropped",
         "invalid-dropped"],
)  # fmt: skip
def test_the_hash_sum_taken_while_checking_equals_a_pass_over_the_transactions(
    tmp_path: Path, log: str, settings: dict, summed_while_checking: bool
):
    """The checks' hash sum stands for the fingerprint's own pass only where ``transactions`` is the log row for row."""
    transactions = read_log_text(tmp_path / "log.csv", log, **settings)
    assert (transactions.row_hash_sum is not None) == summed_while_checking
    for as_of in (dt.date(2023, 1, 5), dt.date(2023, 1, 31)):  # rows after as_of, then none
        counted = count_after_as_of(transactions, as_of)
        own_pass = dataclasses.replace(counted, row_hash_sum=None)
        assert rows_up_to_as_of_fingerprint(counted, as_of) == rows_up_to_as_of_fingerprint(own_pass, as_of)
