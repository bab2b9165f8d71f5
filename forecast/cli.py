"""The `forecast` command: the only place that prints or exits.

Every error ends as one paragraph and exit code 2, without a traceback: a ForecastError says what to do, and so does
running out of memory (MemoryError, Arrow's or DuckDB's); anything else is reported as unexpected (``--debug`` shows
its traceback instead).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from forecast import __version__
from forecast.config import RunConfig, check_date, load_config
from forecast.errors import ConfigError, ForecastError, clip, out_of_memory

if TYPE_CHECKING:
    from forecast.data.ingest import DataQuality

#: Longest error message printed: messages quote user input in short, this bounds the rest (column lists, paths).
MAX_MESSAGE = 2000


@dataclass
class _Progress:
    """The step the running command last announced on its progress display (named if it runs out of memory)."""

    step: str | None = None


_progress = _Progress()


@contextmanager
def user_errors(debug: bool = False, command: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Turn any error into a one-paragraph message and exit code 2, without a traceback.

    A ForecastError says what is wrong and what to do, and so does running out of memory (``out_of_memory``: the
    process's limit, not a bug); any other exception is a bug or an unforeseen fault, reported as such, or re-raised
    with its traceback (exit 1) when ``debug``. ``command`` gives the name of the command running, when known.
    """
    try:
        yield
    except ForecastError as exc:
        _error(str(exc))
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[bold red]interrupted:[/] the run in progress wrote and replaced nothing.")
        raise typer.Exit(code=130) from None
    except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
        raise  # the command line's own exits and usage errors, and a closed pipe: typer reports them
    except Exception as exc:
        memory = out_of_memory(exc)
        if memory is not None:
            _error(_out_of_memory_message(command() if command else None, _progress.step, memory))
            raise typer.Exit(code=2) from None
        if debug:
            raise
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        _error(
            f"an unexpected error stopped the command: {clip(detail, 500)}. "
            "Re-run with --debug for the traceback, and report it."
        )
        raise typer.Exit(code=2) from None


def _out_of_memory_message(command: str | None, step: str | None, exc: BaseException) -> str:
    """The paragraph for a command that ran out of memory (``exc``, a MemoryError or DuckDB's) at ``step``."""
    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    where = f"`forecast {command}`" if command else "The command"
    at = f" at the step '{step}'" if step else ""
    return (
        f"{where} ran out of memory{at} ({clip(detail)}): the system refused the process more memory, under the "
        "limit of the process or of its container, or for want of free memory. Nothing was written or replaced. "
        "Raise the memory limit of the process or container (ulimit -v, the container's memory limit), or lower "
        "duckdb.memory_limit and duckdb.threads in the config so that DuckDB spills to disk and leaves memory to the "
        "rest of the run; for logs beyond one machine's memory, use engine: spark."
    )


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(clip(message, MAX_MESSAGE))}", highlight=False, soft_wrap=True)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


class _Commands(TyperGroup):
    """The commands, each run inside ``user_errors`` (with the global --debug option)."""

    def invoke(self, ctx: Any) -> Any:
        _progress.step = None
        with user_errors(debug=bool(ctx.params.get("debug")), command=lambda: ctx.invoked_subcommand):
            return super().invoke(ctx)


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help="Customer-lifetime-value forecasts.")
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"forecast {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="On an unexpected error, show its traceback (exit 1) instead of a message.")
    ] = False,
) -> None:
    """Options before the command; ``_Commands.invoke`` reads --debug."""


ConfigArg = Annotated[Path, typer.Argument(help="YAML run configuration, e.g. configs/cdnow.yaml.")]
AsOfOption = Annotated[
    dt.datetime | None, typer.Option("--as-of", help="Observation end (YYYY-MM-DD), inclusive.", formats=["%Y-%m-%d"])
]
OutputOption = Annotated[Path | None, typer.Option("--output", help="Output folder (default: the config's output).")]
MonthOption = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Observation end: YYYY-MM (that month's end) or YYYY-MM-DD; default the last complete month."
    ),
]
ThroughOption = Annotated[
    str | None,
    typer.Option("--through", help="Backfill: run every month end from --as-of through this month (YYYY-MM)."),
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace an existing run folder even if it was made from different input.")
]
RunOutputOption = Annotated[
    Path | None,
    typer.Option("--output", help="Exactly this output folder, for a single run (default: <config output>/<as_of>)."),
]


@contextmanager
def progress_display() -> Iterator[Callable[[str], None]]:
    """A spinner showing the current step (quiet when stderr is not a terminal); the step is kept in ``_progress``."""
    if not console.is_terminal:
        yield _announcing(lambda message: console.print(f"- {escape(message)}", highlight=False))
        return
    with console.status("Starting") as status:
        yield _announcing(lambda message: status.update(escape(message)))


def _announcing(show: Callable[[str], None]) -> Callable[[str], None]:
    """``show``, keeping each step it shows in ``_progress``."""

    def say(message: str) -> None:
        _progress.step = message
        show(message)

    return say


EngineOption = Annotated[str | None, typer.Option("--engine", help="duckdb or spark (overrides the config's engine).")]


def _summary_line(manifest: dict[str, Any], output: Path, models: Path) -> str:
    """A finished run in one line: customers, predictive CLV with its interval and its change since the previous
    run, heuristic CLV, and where the outputs are (a Spark run's per-customer Parquet too)."""
    totals = manifest["totals"]
    drift = manifest.get("drift")
    since = ""
    if drift and drift["totals"]["clv"]["relative_change"] is not None:
        since = f" ({drift['totals']['clv']['relative_change']:+.1%} since {drift['previous_as_of']})"
    interval = ""
    if totals.get("clv_lower") is not None:
        level = manifest["config"]["ci_level"]
        interval = f" ({level:.0%} interval {totals['clv_lower']:,.0f} to {totals['clv_upper']:,.0f})"
    engine = " (Spark)" if manifest.get("engine") == "spark" else ""
    parquet = f", per-customer Parquet in {manifest['customers_parquet']}" if "customers_parquet" in manifest else ""
    return (
        f"as_of {manifest['as_of']}: {manifest['input']['customers']:,} customers{engine}, predictive CLV "
        f"{totals['clv']:,.0f}{interval}{since}, heuristic CLV {totals['clv_heuristic']:,.0f}; "
        f"outputs in {output}{parquet}, models in {models}"
    )


@app.command()
def run(
    config: ConfigArg,
    as_of: MonthOption = None,
    output: RunOutputOption = None,
    through: ThroughOption = None,
    force: ForceOption = False,
    engine: EngineOption = None,
) -> None:
    """Run the monthly batch: summary, model fits, per-customer and per-segment CLV, drift, manifest.

    With --through, backfill: one run per month end from --as-of through --through, in order.
    """
    from forecast.batch.registry import month_ends_between

    settings = _with_engine(load_config(config), engine)
    day = _month_option(as_of, "--as-of")
    last = _month_option(through, "--through")
    if last is not None:
        if day is None or output is not None:
            raise ConfigError(
                "--through backfills a range of months: give the first month with --as-of (YYYY-MM) and "
                "leave out --output (each month goes to <config output>/<as_of>/)."
            )
        _backfill(settings, month_ends_between(day, last), force)
        return
    with progress_display() as say:
        messages, line = _run_month(settings, day, output, say, force)
    _report(messages, line)


def _with_engine(settings: RunConfig, engine: str | None) -> RunConfig:
    """The config with ``--engine`` (when given) as its engine."""
    if engine is None:
        return settings
    if engine not in ("duckdb", "spark"):
        raise ConfigError(f"--engine must be duckdb or spark, not {clip(repr(engine))}.")
    return settings.model_copy(update={"engine": engine})


def _month_option(text: str | None, option: str) -> dt.date | None:
    """The date an --as-of or --through gives (YYYY-MM or YYYY-MM-DD), within the dates a run can use."""
    from forecast.batch.registry import parse_as_of

    return check_date(parse_as_of(text), option) if text else None


def _day_option(value: dt.datetime | None, option: str) -> dt.date | None:
    """The date a YYYY-MM-DD option gives, within the dates a run can use."""
    return check_date(value.date(), option) if value else None


def _run_month(
    settings: RunConfig, day: dt.date | None, output: Path | None, say: Callable[[str], None], force: bool
) -> tuple[list[str], str]:
    """One run with the config's engine; return its warnings and its summary line."""
    if settings.engine == "spark":
        from forecast.engines.spark import run as run_spark

        spark_result = run_spark(settings, day, output, say, force=force)
        return spark_result.warnings, _summary_line(spark_result.manifest, spark_result.output, spark_result.models)
    from forecast.batch.pipeline import run as run_pipeline

    result = run_pipeline(settings, day, output, say, force=force)
    return result.forecast.warnings, _summary_line(result.manifest, result.output, result.models)


def _report(messages: list[str], line: str) -> None:
    for message in messages:
        _warn(message)
    typer.echo(line)


def _backfill(settings: RunConfig, month_ends: list[dt.date], force: bool) -> None:
    """Run each month end in order with a progress bar; stop at the first failure (earlier months stay). On Spark
    the months share one Spark session."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not console.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("Backfill", total=len(month_ends))
        for month in month_ends:

            def say(message: str, month: dt.date = month) -> None:
                _progress.step = message
                if console.is_terminal:
                    bar.update(task, description=f"{month}: {escape(message)}")
                else:
                    console.print(f"- {month}: {escape(message)}", highlight=False)

            try:
                messages, line = _run_month(settings, month, None, say, force)
            except (Exception, KeyboardInterrupt):
                console.print(f"[bold red]backfill stopped at {month}[/]; the months before it are complete.")
                raise
            _report(messages, line)
            bar.advance(task)


@app.command()
def backtest(
    config: ConfigArg,
    calibration_end: Annotated[
        dt.datetime | None,
        typer.Option("--calibration-end", help="Last calibration day (YYYY-MM-DD).", formats=["%Y-%m-%d"]),
    ] = None,
    holdout_end: Annotated[
        dt.datetime | None,
        typer.Option("--holdout-end", help="Last holdout day (YYYY-MM-DD).", formats=["%Y-%m-%d"]),
    ] = None,
    output: OutputOption = None,
    engine: EngineOption = None,
) -> None:
    """Fit on the calibration period, predict the holdout, score predictive vs heuristic vs gradient boosting."""
    settings = _with_engine(load_config(config), engine)
    if settings.engine == "spark":
        from forecast.engines.spark import backtest as run_backtest
    else:
        from forecast.batch.pipeline import backtest as run_backtest

    first_day = _day_option(calibration_end, "--calibration-end")
    last_day = _day_option(holdout_end, "--holdout-end")
    with progress_display() as say:
        done = run_backtest(settings, first_day, last_day, output, say)
    document = done.result.document
    for message in done.data_warnings + done.result.warnings:
        _warn(message)
    typer.echo(
        f"calibration to {document['calibration_end']}, holdout to {document['holdout_end']}: "
        f"{document['customers']:,} customers, actual holdout purchases {document['actual']['purchases']:,.0f}, "
        f"revenue {document['actual']['revenue']:,.2f}"
    )
    for line in _backtest_lines(document):
        typer.echo(line)
    typer.echo(f"outputs in {done.output}")


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _backtest_lines(document: dict[str, Any]) -> list[str]:
    """The backtest's table: the deciding scores first, the information ones after the bar; the winner; the model
    choice and the models' holdout scores (information)."""
    lines = [
        f"{'':<18} {'deciding scores':^34} | {'information':^48}",
        f"{'method':<18} {'revenue':>11} {'total':>7} {'RMSE':>7} {'Gini':>6} | {'purchases':>9} {'MAE':>6} "
        f"{'RMSE':>6} {'rev MAE':>8} {'Spearman':>8} {'top20%':>6}",
    ]
    for name, m in document["methods"].items():
        lines.append(
            f"{name:<18} {m['predicted_revenue']:>11,.0f} {_number(m.get('total_revenue_error'), '+.1%'):>7} "
            f"{m['rmse_revenue']:>7.2f} {_number(m.get('normalized_gini'), '.3f'):>6} | "
            f"{m['predicted_purchases']:>9,.0f} {m['mae_purchases']:>6.3f} {m['rmse_purchases']:>6.3f} "
            f"{m['mae_revenue']:>8.2f} {_number(m['spearman_revenue'], '.3f'):>8} "
            f"{_number(m['top20_capture'], '.1%'):>6}"
        )
    overall = document.get("overall_winner", {})
    if overall.get("method"):
        won = overall["wins"][overall["method"]]
        lines.append(
            f"winner: {overall['method']} (best on {won} of {len(overall['decided_by'])} deciding scores: total "
            "revenue error, revenue RMSE, normalized Gini; MAE, Spearman and top-20% capture are information)"
        )
    used = document["purchase_model"]
    lines.append(f"purchase model {used['used']} (configured {used['configured']}): {used.get('reason', '')}")
    for name, entry in document["model_comparison"].items():
        if "error" in entry:
            lines.append(f"  model {name}: not fitted ({entry['error']})")
            continue
        lines.append(
            f"  model {name:<7} LL {entry['log_likelihood']:,.2f}  BIC {entry['bic']:,.2f}  holdout purchases "
            f"{entry['predicted_purchases']:,.0f}  MAE {entry['mae_purchases']:.3f}  holdout LL per 1,000 "
            f"{_number(entry.get('holdout_log_likelihood_per_1000'), ',.1f')} (information)"
        )
    return lines


@app.command()
def validate(config: ConfigArg) -> None:
    """Check the config and the data without fitting; print a data-quality summary."""
    from forecast.data.ingest import count_after_as_of, count_customers, duckdb_limits, read_log

    settings = load_config(config)
    transactions = read_log(settings)
    with closing(transactions.connection), duckdb_limits(settings.duckdb, "counting customers"):
        transactions = count_customers(transactions)
        quality = (count_after_as_of(transactions, settings.as_of) if settings.as_of else transactions).quality
    typer.echo(
        f"{config}: valid. {quality.rows_used or 0:,} of {quality.rows:,} rows used, {quality.customers:,} customers, "
        f"{quality.first_timestamp} .. {quality.last_timestamp}."
    )
    for line in _rows_left_out(quality):
        typer.echo(line)
    for message in quality.warnings:
        typer.echo(f"warning: {message}")


def _rows_left_out(quality: DataQuality) -> list[str]:
    """One line per kind of row that did not become a purchase, with its share of the rows read, largest first."""
    left_out = {
        "invalid timestamp or amount (data.invalid_rows: drop)": quality.invalid_rows,
        "left out by data.exclude": quality.excluded_rows,
        "empty customer id": quality.null_customer_ids,
        "returns (netted or dropped, data.negative_amounts)": quality.negative_amounts,
        "exact duplicates dropped (data.duplicates: drop)": (
            quality.duplicate_rows if quality.duplicates_policy == "drop" else 0
        ),
    }
    rows = max(quality.rows, 1)
    return [
        f"  {count:>12,} rows ({count / rows:6.1%}) {what}"
        for what, count in sorted(left_out.items(), key=lambda item: -item[1])
        if count
    ]


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `forecast run`.")]) -> None:
    """Rebuild report.html in a run folder from its files (after a backtest, or to refresh the charts)."""
    from forecast.report.build import build_report

    path = build_report(run_dir)
    typer.echo(f"report written to {path}")


@app.command()
def budget(
    config: ConfigArg,
    cac: Annotated[
        float | None,
        typer.Option("--cac", help="Acquisition cost per customer (currency); default the config's budget.cac."),
    ] = None,
    as_of: MonthOption = None,
    output: Annotated[Path, typer.Option("--output", help="The budget file to write.")] = Path("budget.csv"),
    engine: EngineOption = None,
) -> None:
    """Per segment one can bid on: does a new customer acquired at the CAC pay back, and when; writes budget.csv."""
    from forecast.batch.pipeline import budget_table, check_budget_file, write_budget_file

    settings = _with_engine(load_config(config), engine)
    day = _month_option(as_of, "--as-of")
    check_budget_file(output)
    with progress_display() as say:
        if settings.engine == "spark":
            from forecast.engines.spark import budget as budget_on_engine
        else:
            from forecast.batch.pipeline import budget as budget_on_engine
        result = budget_on_engine(settings, cac, day, say)
    for message in result.warnings:
        _warn(message)
    table = budget_table(result.segments, settings)
    write_budget_file(table, output)
    typer.echo(
        f"as_of {result.as_of}: a new customer's value over {settings.horizon_months} months at "
        f"{settings.monthly_discount_rate:.2%} a month, margin {settings.margin:g}; target LTV:CAC "
        f"{settings.budget.target_ltv_to_cac:g}. Segments one can bid on:"
    )
    for row in table[table["biddable"] & (table["verdict"] != "")].itertuples(index=False):
        typer.echo(f"  {row.segmentation}={row.segment} ({row.customers:,} customers): {row.verdict}")
    typer.echo(f"all segments, with value tiers and RFM groups (known only after acquisition), in {output}")


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Parquet file to write, e.g. data/sim_10m.parquet.")],
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers to simulate (~3 rows each).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the file depends only on the options.")] = 0,
    start: Annotated[dt.datetime, typer.Option("--start", formats=["%Y-%m-%d"], help="First day.")] = dt.datetime(
        2020, 1, 1
    ),
    end: Annotated[dt.datetime, typer.Option("--end", formats=["%Y-%m-%d"], help="Observation end.")] = dt.datetime(
        2021, 6, 30
    ),
    acquisition_days: Annotated[int, typer.Option("--acquisition-days", min=1, help="Acquisition period.")] = 84,
    time_unit: Annotated[str, typer.Option("--time-unit", help="Unit of alpha: day, week or month.")] = "week",
    r: Annotated[float, typer.Option("--r", min=0, help="BG/NBD r.")] = 0.25,
    alpha: Annotated[float, typer.Option("--alpha", min=0, help="BG/NBD alpha (per time unit).")] = 4.0,
    a: Annotated[float, typer.Option("--a", min=0, help="BG/NBD a.")] = 0.8,
    b: Annotated[float, typer.Option("--b", min=0, help="BG/NBD b.")] = 2.5,
    p: Annotated[float, typer.Option("--p", min=0, help="Gamma-Gamma p.")] = 6.0,
    q: Annotated[float, typer.Option("--q", min=0, help="Gamma-Gamma q.")] = 4.0,
    gamma: Annotated[float, typer.Option("--gamma", min=0, help="Gamma-Gamma gamma.")] = 15.0,
) -> None:
    """Write a simulated transaction log (BG/NBD purchases, Gamma-Gamma spend, exact timestamps) as Parquet."""
    from forecast.config import DAYS_PER_UNIT
    from forecast.data.simulate import TrueParams, write_simulated_log

    problems = []
    if time_unit not in DAYS_PER_UNIT:
        problems.append(f"--time-unit must be one of {', '.join(DAYS_PER_UNIT)} (got {time_unit!r})")
    if end.date() <= start.date():
        problems.append(f"--end ({end.date()}) must be after --start ({start.date()})")
    if problems:
        _error(f"{'; '.join(problems)}.")
        raise typer.Exit(code=2)
    params = TrueParams(r=r, alpha=alpha, a=a, b=b, p=p, q=q, gamma=gamma)
    try:
        rows = write_simulated_log(out, customers, params, start.date(), end.date(), acquisition_days, time_unit, seed)
    except OSError as exc:
        _error(f"cannot write {out}: {exc}. Choose a writable path.")
        raise typer.Exit(code=2) from None
    typer.echo(f"{out}: {rows:,} transactions of {customers:,} customers ({params}).")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
