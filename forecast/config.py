"""The run configuration: a YAML file validated into typed settings.

Unknown keys are errors that name the key, so a typo never silently falls back to a default.
A config is at most 64 KiB of UTF-8 YAML without aliases, so that no file can make a huge message or eat memory.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from forecast.errors import ConfigError, clip

TimeUnit = Literal["day", "week", "month"]
PurchaseModelName = Literal["bgnbd", "mbgnbd", "pareto", "auto"]

#: Days in one unit of model time; a month is 365.25 / 12 days (docs/reference.md, "How the numbers are defined").
DAYS_PER_UNIT: dict[str, float] = {"day": 1.0, "week": 7.0, "month": 365.25 / 12}
DAYS_PER_MONTH = 365.25 / 12
DAYS_PER_YEAR = 365.25

#: Largest config file read: ten times the annotated example, far below what could exhaust memory.
MAX_CONFIG_BYTES = 64 * 1024
#: Problems listed in one validation message; the rest are counted.
MAX_PROBLEMS = 10
#: The dates a run can use: the code adds days and months to them, which overflows at the end of the calendar.
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2999, 12, 31)


def check_date(day: dt.date, name: str) -> dt.date:
    """Return ``day``, or raise a ConfigError naming the option ``name`` when it is outside FIRST_DATE..LAST_DATE."""
    if not FIRST_DATE <= day <= LAST_DATE:
        raise ConfigError(f"{name} {day} is out of range: give a date from {FIRST_DATE} to {LAST_DATE}.")
    return day


def _within_calendar(day: dt.date) -> dt.date:
    if not FIRST_DATE <= day <= LAST_DATE:
        raise ValueError(f"must be a date from {FIRST_DATE} to {LAST_DATE}")
    return day


CalendarDate = Annotated[dt.date, AfterValidator(_within_calendar)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RowFilter(_Strict):
    """Rows of the log to leave out before anything else: ``column`` equals, starts with, or is one of values.

    Values are compared with the column's text as the file gives it (a Parquet number as DuckDB prints it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    column: str
    equals: str | None = None
    starts_with: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")

    @field_validator("equals", "starts_with", mode="before")
    @classmethod
    def _scalar_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("in_", mode="before")
    @classmethod
    def _list_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _one_test(self) -> RowFilter:
        given = [name for name in ("equals", "starts_with", "in_") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'equals', 'starts_with' or 'in' beside 'column'")
        if self.in_ is not None and not self.in_:
            raise ValueError("'in' needs at least one value")
        return self

    def describe(self) -> str:
        """The filter as the messages name it: ``StockCode in [POST, M]``."""
        if self.equals is not None:
            return f"{self.column} equals {self.equals!r}"
        if self.starts_with is not None:
            return f"{self.column} starts with {self.starts_with!r}"
        return f"{self.column} in [{', '.join(self.in_ or [])}]"


class DataConfig(_Strict):
    """Where the transaction log is and which of its columns mean what."""

    path: str = Field(description="File, glob or folder; 'lifetimes:NAME' for a data set lifetimes ships.")
    format: Literal["auto", "csv", "parquet", "whitespace"] = "auto"
    customer_id: str = "customer_id"
    timestamp: str = "timestamp"
    amount: str = "amount"
    quantity: str | None = Field(
        default=None, description="Column of quantities: a row's amount is then amount x quantity (unit price)."
    )
    exclude: list[RowFilter] = Field(
        default_factory=list, description="Row filters applied first (e.g. postage lines); the rows are counted."
    )
    timestamp_format: str | None = Field(
        default=None, description="strptime format, e.g. '%Y%m%d'; None parses ISO dates and timestamps."
    )
    columns: list[str] | None = Field(default=None, description="Column names for whitespace files (in file order).")
    header: bool = True
    delimiter: str | None = None
    segment_columns: list[str] = Field(default_factory=list)
    negative_amounts: Literal["net", "drop", "fail"] = "net"
    return_window_days: int = Field(
        default=90, ge=0, le=3660, description="net: a return is netted into a purchase at most this many days before."
    )
    order_id: str | None = Field(default=None, description="Column identifying one row per order (optional).")
    duplicates: Literal["keep", "drop", "fail"] = Field(
        default="keep", description="Exact duplicate rows and repeated order ids: keep, drop (keep the first), fail."
    )
    invalid_rows: Literal["fail", "drop"] = Field(
        default="fail", description="Rows with an unparseable date or a non-numeric/non-finite amount."
    )
    invalid_rows_max_share: float = Field(
        default=0.01, ge=0.0, le=1.0, description="invalid_rows: drop fails when more than this share is invalid."
    )
    timezone: str = Field(
        default="UTC", description="IANA zone of naive timestamps; offsets are converted to it; days are local."
    )
    exclude_customers: list[str] = Field(
        default_factory=list,
        description="Customer ids to leave out (shared, test or guest-checkout accounts); their rows are counted.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'") from None
        return value

    @model_validator(mode="after")
    def _columns_for_whitespace(self) -> DataConfig:
        if self.format == "whitespace" and not self.columns:
            raise ValueError("format 'whitespace' needs 'columns': the names of the fields in file order")
        return self


class HeuristicConfig(_Strict):
    """The marketing heuristic: average purchase value x purchases per year x lifespan x margin."""

    lifespan_years: float | Literal["auto"] = 3.0

    @field_validator("lifespan_years")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if value != "auto" and float(value) <= 0:
            raise ValueError("must be positive (years) or 'auto'")
        return value


class SegmentConfig(_Strict):
    """Value tiers by predictive CLV: shares of customers from the top, the rest last."""

    tiers: dict[str, float] = Field(
        default_factory=lambda: {"top 1%": 0.01, "next 4%": 0.04, "next 15%": 0.15, "rest": 0.80}
    )

    @field_validator("tiers")
    @classmethod
    def _shares_sum_to_one(cls, tiers: dict[str, float]) -> dict[str, float]:
        if not tiers or any(share <= 0 for share in tiers.values()):
            raise ValueError("every tier needs a positive share of customers")
        if abs(sum(tiers.values()) - 1.0) > 1e-9:
            raise ValueError(f"tier shares must add up to 1, they add up to {sum(tiers.values()):g}")
        return tiers


class BacktestConfig(_Strict):
    """A calibration/holdout split: fit up to calibration_end, score (calibration_end, holdout_end]."""

    calibration_end: CalendarDate = Field(description="Last day of the calibration period (inclusive).")
    holdout_end: CalendarDate | None = Field(
        default=None, description="Last day of the holdout period (inclusive); default as_of, else the last day."
    )
    seed: int = Field(default=0, description="Seed of the machine-learning baseline.")

    @model_validator(mode="after")
    def _holdout_after_calibration(self) -> BacktestConfig:
        if self.holdout_end is not None and self.holdout_end <= self.calibration_end:
            raise ValueError(f"holdout_end {self.holdout_end} must be after calibration_end {self.calibration_end}")
        return self


class ModelSelectionConfig(_Strict):
    """How ``purchase_model: auto`` chooses, and how a configured model is checked: an internal validation inside
    the data up to the cut-off (as_of, or a backtest's calibration_end); see forecast.evaluation.selection."""

    window_days: int = Field(
        default=91, ge=7, le=3653,
        description="Days at the end of the data before the cut-off that the models predict (13 weeks); at most a "
        "third of the data's span.",
    )  # fmt: skip
    origins: int = Field(default=1, ge=1, le=6, description="Validation windows, back to back before the cut-off.")
    max_customers: int = Field(
        default=25_000, ge=1_000, le=100_000_000,
        description="Customers fitted and scored per window at most (a fixed sample by id hash above it).",
    )  # fmt: skip
    check_configured: bool = Field(
        default=False,
        description="Also validate a configured purchase_model, and warn when another scores clearly better.",
    )


class PenalizerConfig(_Strict):
    """lifetimes' L2 penalty on the models' parameters (``penalizer_coef``); 0 is maximum likelihood.

    ``penalizer * sum(params ** 2)`` is added to the mean negative log-likelihood per customer (the total for
    Pareto/NBD), with alpha and beta in lifetimes' rescaled time (ages up to 1), so a fit equals lifetimes' fitter
    with the same ``penalizer_coef``. Typical values are 0.001 to 0.1; see docs/reference.md.
    """

    purchases: float = Field(
        default=0.0, ge=0.0, allow_inf_nan=False, description="Penalty of the purchase model (and of the NBD)."
    )
    spend: float = Field(
        default=0.0, ge=0.0, allow_inf_nan=False, description="Penalty of Gamma-Gamma (gamma in currency units)."
    )


class CostsConfig(_Strict):
    """The cost of serving a customer, subtracted after the margin from the predictive and the heuristic CLV.

    Zero by default: the CLV is then the gross margin. With costs, the outputs carry the net figures beside the
    gross ones (``clv_net``, ``clv_heuristic_net``; forecast.value.costs).
    """

    per_purchase: float = Field(
        default=0.0, ge=0.0, allow_inf_nan=False, description="Cost of each purchase (fulfilment, handling), currency."
    )
    per_active_month: float = Field(
        default=0.0, ge=0.0, allow_inf_nan=False,
        description="Cost of each month the customer is alive (service, accounts), currency.",
    )  # fmt: skip


class DriftConfig(_Strict):
    """When a change since the previous month's run becomes a warning (see forecast.batch.drift)."""

    parameter_z: float = Field(default=3.0, gt=0, description="Warn when |change / SE of the change| exceeds this.")
    total_clv_change: float = Field(default=0.25, gt=0, description="Warn when total CLV changes by more (fraction).")
    lapsed_p_alive: float = Field(default=0.5, gt=0, lt=1, description="P(alive) below which a customer has lapsed.")


class BudgetConfig(_Strict):
    """Acquisition and retention budget settings (see forecast.value.budget)."""

    target_ltv_to_cac: float = Field(
        default=3.0, gt=0.0, description="Target ratio of new-customer CLV to acquisition cost (3 means CLV = 3 x CAC)."
    )
    p_alive_threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="Customers with P(alive) below this count as value at risk."
    )
    cac: float | dict[str, float] | None = Field(
        default=None,
        description="Acquisition cost per customer: one amount, or amounts by segment name with 'default' for "
        "the rest (e.g. {web: 20, store: 12, default: 15}); gives segments.csv its payback columns.",
    )
    cohort: Literal["month", "quarter"] = Field(
        default="quarter",
        description="Acquisition cohorts (segmentation 'cohort'): the month or quarter of the first purchase.",
    )

    @field_validator("cac")
    @classmethod
    def _positive_costs(cls, value: float | dict[str, float] | None) -> float | dict[str, float] | None:
        amounts = value.values() if isinstance(value, dict) else [] if value is None else [value]
        if any(not (amount > 0 and amount < float("inf")) for amount in amounts):
            raise ValueError("acquisition costs must be positive amounts per customer")
        if isinstance(value, dict) and not value:
            raise ValueError("give one amount, or amounts by segment name (with 'default' for the rest)")
        return value


class DuckDBConfig(_Strict):
    """Resources of the embedded DuckDB engine (the summary query); spills to disk beyond the memory limit."""

    threads: int | None = Field(default=None, ge=1, description="Worker threads; default all cores.")
    memory_limit: str = Field(
        default="4GB", description="DuckDB memory limit (e.g. '4GB'); larger aggregations spill to temp_directory."
    )
    temp_directory: str | None = Field(default=None, description="Spill folder; default DuckDB's own (.tmp).")

    @field_validator("memory_limit")
    @classmethod
    def _duckdb_accepts(cls, value: str) -> str:
        """Try the limit on a throwaway connection: DuckDB's own parser decides, as it will in the run."""
        import duckdb

        with duckdb.connect() as con:
            try:
                con.execute("SET memory_limit = '{}'".format(value.replace("'", "''")))
            except duckdb.Error as exc:
                reason = clip(str(exc).splitlines()[0].rstrip("."))
                raise ValueError(
                    f"DuckDB refuses it ({reason}); give a size such as '4GB' or '512MB', or a share of RAM such as "
                    "'50%'"
                ) from None
        return value


class SparkConfig(_Strict):
    """Where and how to run the summary and the scoring with ``engine: spark``.

    See docs/operations.md, "The Spark engine".
    """

    master: str | None = Field(
        default=None,
        description="spark.master: local[*], spark://host:7077, yarn, k8s://...; default: the MASTER environment "
        "variable, else spark.master in spark-defaults.conf, else local[*]",
    )
    app_name: str = "clv-forecast"
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings, e.g. spark.executor.memory.")
    output: str | None = Field(
        default=None,
        description="Folder (shared storage URI on a cluster) where Spark writes the per-customer Parquet; "
        "default: customers.parquet inside the run's output folder (right for local[*]).",
    )
    remote: str | None = Field(
        default=None,
        description="A Spark Connect server to run on (sc://host:15002; local[N] starts one here), instead of a "
        "master; default: the SPARK_REMOTE environment variable, else none (classic Spark)",
    )

    @model_validator(mode="after")
    def _master_or_remote(self) -> SparkConfig:
        if self.master is not None and self.remote is not None:
            raise ValueError(
                "give spark.master or spark.remote (a Spark Connect server knows its own master), not both"
            )
        return self


class RunConfig(_Strict):
    """Everything one run needs; see configs/cdnow.yaml for an annotated example."""

    #: The YAML file the config was read from (``load_config``), which a run never deletes.
    _source: Path | None = PrivateAttr(default=None)

    data: DataConfig
    as_of: CalendarDate | None = None
    time_unit: TimeUnit = "week"
    resolution: Literal["day", "exact"] = "day"
    horizon_months: int = Field(default=12, ge=1, le=600)
    monthly_discount_rate: float = Field(default=0.01, ge=0.0, lt=1.0)
    margin: float = Field(default=1.0, gt=0.0, le=1.0)
    costs: CostsConfig = Field(default_factory=CostsConfig)
    #: ``auto`` is not the default yet: on a short log the internal validation's Pareto/NBD fit goes through
    #: lifetimes' Nelder-Mead with the quadrature form of its likelihood and can take many minutes.
    purchase_model: PurchaseModelName = "bgnbd"
    model_selection: ModelSelectionConfig = Field(default_factory=ModelSelectionConfig)
    penalizer: PenalizerConfig = Field(default_factory=PenalizerConfig)
    backtest: BacktestConfig | None = None
    heuristic: HeuristicConfig = Field(default_factory=HeuristicConfig)
    segments: SegmentConfig = Field(default_factory=SegmentConfig)
    ci_level: float = Field(default=0.9, gt=0.0, lt=1.0, description="Level of the CLV intervals (0.9 = 90%).")
    interval_draws: int = Field(
        default=200, ge=0, le=100_000, description="Parameter draws for the CLV intervals; 0 switches them off."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the random draws, so that runs are reproducible.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    output: str = "runs/latest"
    models_dir: str = "models"
    engine: Literal["duckdb", "spark"] = "duckdb"
    duckdb: DuckDBConfig = Field(default_factory=DuckDBConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    customers_csv: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Write customers.csv: 'auto' only up to a spreadsheet's 1,048,575 data rows.",
    )

    @property
    def days_per_unit(self) -> float:
        return DAYS_PER_UNIT[self.time_unit]


#: A path that names a storage system rather than the local disk: s3a://, abfss://, hdfs://, gs://, file://, ...
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_relative_local_path(data_path: str) -> bool:
    """Whether ``data.path`` is a local path relative to the config's folder (and so resolved against it), rather
    than an absolute path, a URI with a scheme (``s3a://bucket/logs/``), a ``table:`` name (Spark) or a
    ``lifetimes:`` data set, which are passed on untouched.

    Examples
    --------
    >>> [is_relative_local_path(p) for p in ("logs/*.csv", "/data/log.csv", "s3a://b/log/", "table:db.t")]
    [True, False, False, False]
    """
    if data_path.startswith(("lifetimes:", "table:")) or URI_SCHEME.match(data_path):
        return False
    return not Path(data_path).is_absolute()


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that stops at the first alias: a few nested aliases expand to billions of values."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise _AliasError(f"*{event.anchor} (line {line})")
        return super().compose_node(parent, index)


class _AliasError(Exception):
    """A YAML alias in a config: its name and line."""


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run configuration.

    Relative data paths are resolved against the config file's folder.

    Raises
    ------
    ConfigError
        The file is missing, unreadable, too large, not UTF-8, not YAML, uses aliases, or has unknown, missing or
        invalid keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Check the path, or copy configs/cdnow.yaml as a start.")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror or exc}. Check its permissions.") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"Config file {path} is {path.stat().st_size:,} bytes; a run config is at most {MAX_CONFIG_BYTES:,} "
            "(configs/cdnow.yaml is 2 KB). Check that it is the run config, and move data out of it."
        )
    try:
        raw = yaml.load(_config_text(path, data), Loader=_NoAliasLoader)
    except _AliasError as exc:
        raise ConfigError(
            f"Config file {path} uses the YAML alias {exc}. A run config takes no aliases: write the value out "
            "in full where the alias is."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}. Fix the syntax and run again.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must be a YAML mapping of keys to values (see configs/cdnow.yaml).")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"Config file {path} is invalid: {describe_validation_error(exc)}") from None
    data_path = config.data.path
    if is_relative_local_path(data_path):
        resolved = str((path.parent / data_path).resolve())
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": resolved})})
    config._source = path.resolve()
    return config


def _config_text(path: Path, data: bytes) -> str:
    """The config's text, or a ConfigError saying how to re-encode a file that is not UTF-8 (a BOM is allowed)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        problem, source = " (it looks like UTF-16)", "UTF-16"
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            problem, source = f": byte 0x{data[exc.start]:02x} on line {line} is not UTF-8", "CP1252"
    raise ConfigError(
        f"Config file {path} is not UTF-8 text{problem}. Save it as UTF-8 in your editor, or re-encode it, e.g. "
        f"`iconv -f {source} -t UTF-8 {path} > utf8.yaml` (with the encoding it was saved in, if not {source})."
    )


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's report into one sentence per problem, naming each key and quoting at most 200 characters."""
    problems = []
    for error in exc.errors():
        key = clip(".".join(str(part) for part in error["loc"]) or "(top level)")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}' (remove it or check its spelling)")
        elif error["type"] == "missing":
            problems.append(f"missing key '{key}'")
        else:
            problems.append(f"'{key}': {clip(error['msg'], 500)} (got {clip(repr(error.get('input')))})")
    if len(problems) > MAX_PROBLEMS:
        problems[MAX_PROBLEMS:] = [f"and {len(problems) - MAX_PROBLEMS:,} more"]
    return "; ".join(problems) + "."
