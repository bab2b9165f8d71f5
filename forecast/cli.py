"""The `forecast` command: the only place that prints or exits."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from forecast.config import load_config
from forecast.errors import ConfigError, ForecastError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Customer-lifetime-value forecasts.")
console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML run configuration, e.g. configs/cdnow.yaml.")]
AsOfOption = Annotated[
    dt.datetime | None, typer.Option("--as-of", help="Observation end (YYYY-MM-DD), inclusive.", formats=["%Y-%m-%d"])
]
OutputOption = Annotated[Path | None, typer.Option("--output", help="Output folder (default: the config's output).")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into a one-paragraph message and exit code 2, without a traceback."""
    try:
        yield
    except ForecastError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[bold red]interrupted:[/] no output was written or replaced.")
        raise typer.Exit(code=130) from None


@contextmanager
def progress_display() -> Iterator[Callable[[str], None]]:
    """A spinner showing the current step (quiet when stderr is not a terminal)."""
    if not console.is_terminal:
        yield lambda message: console.print(f"- {message}", highlight=False)
        return
    with console.status("Starting") as status:
        yield lambda message: status.update(message)


EngineOption = Annotated[
    str | None, typer.Option("--engine", help="duckdb or spark (overrides the config's engine).")
]


@app.command()
def run(config: ConfigArg, as_of: AsOfOption = None, output: OutputOption = None, engine: EngineOption = None) -> None:
    """Run the monthly batch: summary, model fits, per-customer and per-segment CLV, manifest."""
    from forecast.pipeline import run as run_pipeline

    with user_errors(), progress_display() as say:
        settings = load_config(config)
        if engine is not None:
            if engine not in ("duckdb", "spark"):
                raise ConfigError(f"--engine must be duckdb or spark, not {engine!r}.")
            settings = settings.model_copy(update={"engine": engine})
        if settings.engine == "spark":
            from forecast.spark import run as run_spark

            spark_result = run_spark(settings, as_of.date() if as_of else None, output, say)
    if settings.engine == "spark":
        for message in spark_result.warnings:
            console.print(f"[yellow]warning:[/] {message}", highlight=False)
        totals = spark_result.manifest["totals"]
        typer.echo(
            f"as_of {spark_result.as_of}: {spark_result.customers:,} customers (Spark), predictive CLV "
            f"{totals['clv']:,.0f}, heuristic CLV {totals['clv_heuristic']:,.0f}; outputs in {spark_result.output}, "
            f"per-customer Parquet in {spark_result.customers_path}, models in {spark_result.models}"
        )
        return
    with user_errors(), progress_display() as say:
        result = run_pipeline(settings, as_of.date() if as_of else None, output, say)
    totals = result.manifest["totals"]
    for message in result.forecast.warnings:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)
    typer.echo(
        f"as_of {result.forecast.as_of}: {len(result.forecast.customers):,} customers, predictive CLV "
        f"{totals['clv']:,.0f}, heuristic CLV {totals['clv_heuristic']:,.0f}; outputs in {result.output}, "
        f"models in {result.models}"
    )


@app.command()
def validate(config: ConfigArg) -> None:
    """Check the config and the data without fitting; print a data-quality summary."""
    from forecast.ingest import read_transactions

    with user_errors():
        settings = load_config(config)
        quality = read_transactions(settings.data).quality
    typer.echo(
        f"{config}: valid. {quality.rows:,} rows, {quality.customers:,} customers, "
        f"{quality.first_timestamp} .. {quality.last_timestamp}."
    )
    for message in quality.warnings:
        typer.echo(f"warning: {message}")


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
    from forecast.simulate import TrueParams, write_simulated_log

    problems = []
    if time_unit not in DAYS_PER_UNIT:
        problems.append(f"--time-unit must be one of {', '.join(DAYS_PER_UNIT)} (got {time_unit!r})")
    if end.date() <= start.date():
        problems.append(f"--end ({end.date()}) must be after --start ({start.date()})")
    if problems:
        console.print(f"[bold red]error:[/] {'; '.join(problems)}.", highlight=False)
        raise typer.Exit(code=2)
    params = TrueParams(r=r, alpha=alpha, a=a, b=b, p=p, q=q, gamma=gamma)
    with user_errors():
        try:
            rows = write_simulated_log(
                out, customers, params, start.date(), end.date(), acquisition_days, time_unit, seed
            )
        except OSError as exc:
            console.print(f"[bold red]error:[/] cannot write {out}: {exc}. Choose a writable path.", highlight=False)
            raise typer.Exit(code=2) from None
    typer.echo(f"{out}: {rows:,} transactions of {customers:,} customers ({params}).")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
