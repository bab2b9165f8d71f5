"""Shared by the batch tests: the CDNOW sample as a CSV log, configs on it, and digests of run files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import yaml

REPRODUCIBLE_FILES = [
    "customers.csv", "customers.parquet", "segments.csv", "models/purchases.json", "models/spend.json",
]  # fmt: skip


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_config(folder: Path, data: Path | dict, **settings: object) -> Path:
    """A run config on a CSV log (or a data section), with the runs root and models folder inside ``folder``."""
    if isinstance(data, Path):
        data = {"path": str(data), "customer_id": "customer_id", "timestamp": "timestamp", "amount": "amount"}
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "data": data,
        "time_unit": "week",
        "margin": 0.3,
        "output": str(folder / "runs"),
        "models_dir": str(folder / "models"),
        **settings,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def digests(folder: Path, names: list[str] = REPRODUCIBLE_FILES) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}
