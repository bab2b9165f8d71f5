"""The hashes that identify what a run read and wrote: one function per purpose.

- ``input_files_sha256``: SHA-256 of the input files' names and bytes. The manifest's ``input.sha256``: which
  files, byte for byte, a run read.
- ``rows_up_to_as_of_fingerprint``: a sum of DuckDB row hashes of the transactions up to as_of. The manifest's
  ``input.rows_up_to_as_of``, ``input.as_of_sha256`` and ``input.fingerprint_method``: whether a re-run for an
  as_of uses the same data as the run it would replace, whatever the row order and the rows after as_of.
- ``file_sha256``: SHA-256 of one file's bytes. The manifest's ``models.sha256``: whether a model file of a
  finished run was changed after the run wrote it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import duckdb

from forecast.data.ingest import Transactions, row_hash_sum_sql

#: Bytes read at a time while hashing a file.
BLOCK_BYTES = 1 << 20


def _hash_file_bytes(digest: Any, path: Path) -> None:
    """Feed a file's bytes to ``digest`` a block at a time (files may be larger than memory)."""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)


def input_files_sha256(files: list[Path]) -> str:
    """SHA-256 over the name and bytes of every input file, in the order given (``resolve_files``: path order).

    Parameters
    ----------
    files
        The log's files, as ``Transactions.files`` lists them.

    Returns
    -------
    str
        The hex digest written to the manifest as ``input.sha256``.
    """
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(path.name))
        _hash_file_bytes(digest, path)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of one file's bytes, as a hex digest (the manifest's ``models.sha256`` of each model file)."""
    digest = hashlib.sha256()
    _hash_file_bytes(digest, path)
    return digest.hexdigest()


def row_hash_method() -> str:
    """The name of the row-hash method, with the DuckDB version whose ``hash()`` it uses."""
    return "duckdb-hash-" + ".".join(duckdb.__version__.split(".")[:2])


def rows_up_to_as_of_fingerprint(transactions: Transactions, as_of: dt.date) -> dict[str, Any]:
    """Identify the transactions a run as of a date uses, independently of row order and of later rows.

    Each row (customer_id, ts, amount, segment columns) is hashed to 64 bits with DuckDB's ``hash()`` and
    the hashes are summed exactly (128-bit integers; ``ingest.row_hash_sum_sql``), so appending next month's rows
    or reordering the file does not change the fingerprint of an earlier as_of, while any edit to a row up to
    as_of does (but for a 2**-64 chance). It tells a re-run of the same data from a run of changed data; it is
    no protection against deliberately forged files. ``hash()`` is much faster than a cryptographic hash per row
    but may change between DuckDB versions, so the method names the version (``row_hash_method``). When
    no row is after as_of (``count_after_as_of``) and the read's checks summed every row
    (``Transactions.row_hash_sum``), that sum is taken instead of a pass over the log.

    Parameters
    ----------
    transactions
        The log as ``read_transactions`` registered it.
    as_of
        Observation end (inclusive, a calendar day).

    Returns
    -------
    dict
        ``rows_up_to_as_of``, ``as_of_sha256`` (SHA-256 of the method, row count and hash sum) and
        ``fingerprint_method`` (``row_hash_method``): the keys of the manifest's ``input`` they are written to.
    """
    if transactions.row_hash_sum is not None and transactions.ends_by(as_of):
        rows, total = transactions.quality.rows_used or 0, transactions.row_hash_sum  # every row is used
    else:
        end = (as_of + dt.timedelta(days=1)).isoformat()
        counts = transactions.connection.execute(
            f"""SELECT count(*), {row_hash_sum_sql(transactions.segment_columns)}
                FROM transactions WHERE ts < DATE '{end}'"""
        ).fetchone()
        assert counts is not None
        rows, total = counts
    method = row_hash_method()
    text = f"method={method};rows={rows};sum={total}"
    return {
        "rows_up_to_as_of": int(rows),
        "as_of_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "fingerprint_method": method,
    }
