"""Fitted-model artifacts: JSON parameters plus metadata, loadable without pickle or code execution."""

from __future__ import annotations

import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from forecast.errors import ArtifactError
from forecast.models import MODELS, GammaGamma, PurchaseModel

SCHEMA_VERSION = 1
#: Packages whose major.minor version must match between the run that wrote an artifact and the reader:
#: lifetimes supplies the likelihoods and conditional expectations the parameters are read with.
COMPATIBLE_PACKAGES = ("lifetimes",)
VERSIONED_PACKAGES = ("clv-forecast", "lifetimes", "pandas", "numpy", "scipy", "duckdb", "pyarrow")


def library_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour the results depend on."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by None so that the JSON is standard (no NaN or Infinity tokens)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def model_artifact(model: PurchaseModel | GammaGamma, role: str, data_window: dict[str, str]) -> dict[str, Any]:
    """The JSON document for one fitted model (role: ``purchases`` or ``spend``)."""
    return json_safe(
        {
            "schema_version": SCHEMA_VERSION,
            "role": role,
            **model.to_dict(),
            "data_window": data_window,
            "versions": library_versions(),
        }
    )


def major_minor(text: str) -> tuple[str, ...]:
    """The first two components of a version string ('0.11.3' -> ('0', '11'))."""
    return tuple(text.split("+")[0].split(".")[:2])


def check_versions(path: Path, recorded: Any) -> None:
    """Refuse an artifact written with another major.minor version of a package in ``COMPATIBLE_PACKAGES``.

    Raises
    ------
    ArtifactError
        The artifact records no versions, or a version that differs in major or minor from the installed one.
    """
    if not isinstance(recorded, dict):
        raise ArtifactError(
            f"Model artifact {path} records no library versions, so it cannot be checked. Re-run `forecast run`."
        )
    installed = library_versions()
    for package in COMPATIBLE_PACKAGES:
        written = str(recorded.get(package))
        if major_minor(written) != major_minor(installed[package]):
            raise ArtifactError(
                f"Model artifact {path} was written with {package} {written}, but {package} "
                f"{installed[package]} is installed; the major.minor versions must match. Install {package}=="
                f"{written} to read it, or re-run `forecast run` to refit with the installed version."
            )


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON document with sorted keys (stable bytes for identical results)."""
    path.write_text(json.dumps(json_safe(document), indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def schema_problems(document: dict[str, Any]) -> list[str]:
    """What is wrong with a model document's fields and types (an empty list when it is well formed).

    Only plain JSON values of the expected types are accepted: parameters are finite positive numbers,
    standard errors numbers or null, the covariance a square list of numbers or null, the log-likelihood a number
    or null (a model without one, the mean spend), settings (``penalizer``, ``shrinkage``) non-negative numbers.
    """
    problems = []
    params = document.get("params")
    if not isinstance(params, dict) or not params:
        problems.append("'params' must be an object of parameter names to numbers")
    else:
        bad = [k for k, v in params.items() if not _is_number(v) or not math.isfinite(v) or v <= 0]
        if bad:
            problems.append(f"parameters {sorted(bad)} are not finite positive numbers")
    errors = document.get("standard_errors")
    if not isinstance(errors, dict) or any(v is not None and not _is_number(v) for v in errors.values()):
        problems.append("'standard_errors' must be an object of numbers or nulls")
    covariance = document.get("covariance_log_params")
    if covariance is not None and not (
        isinstance(covariance, list)
        and all(isinstance(row, list) and len(row) == len(covariance) for row in covariance)
        and all(_is_number(v) for row in covariance for v in row)
    ):
        problems.append("'covariance_log_params' must be a square list of numbers or null")
    if "log_likelihood" not in document or not (
        document["log_likelihood"] is None or _is_number(document["log_likelihood"])
    ):
        problems.append("'log_likelihood' must be a number or null")
    for key in ("penalizer", "shrinkage"):
        value = document.get(key, 0.0)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            problems.append(f"'{key}' must be a non-negative number")
    if not isinstance(document.get("converged"), bool):
        problems.append("'converged' must be true or false")
    for key in ("customers", "unique_rows"):
        if not isinstance(document.get(key), int) or isinstance(document.get(key), bool):
            problems.append(f"'{key}' must be an integer")
    return problems


def load_model(path: str | Path) -> PurchaseModel | GammaGamma:
    """Load a fitted model from its JSON artifact, checking the schema and library versions (never unpickles).

    Raises
    ------
    ArtifactError
        The file is missing, not JSON, of another schema version, written with another major.minor
        version of lifetimes, or not a model this toolkit knows.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"Model artifact {path} not found. Run `forecast run` first.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"Model artifact {path} is not valid JSON ({exc}). Re-run `forecast run`.") from None
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        found = document.get("schema_version") if isinstance(document, dict) else None
        raise ArtifactError(
            f"Model artifact {path} has schema version {found!r}; this version of clv-forecast reads "
            f"{SCHEMA_VERSION}. Re-run `forecast run` to refit."
        )
    problems = schema_problems(document)
    if problems:
        raise ArtifactError(f"Model artifact {path} is malformed: {'; '.join(problems)}. Re-run `forecast run`.")
    check_versions(path, document.get("versions"))
    try:
        return model_from_dict(document)
    except ArtifactError as exc:
        raise ArtifactError(f"Model artifact {path}: {exc}") from None


def model_from_dict(document: dict[str, Any]) -> PurchaseModel | GammaGamma:
    """The fitted model a ``to_dict`` document describes, by its ``name`` (any model a run can publish).

    Raises
    ------
    ArtifactError
        The name is not a model this toolkit knows, or the document does not describe one.
    """
    name = document.get("name")
    model_class = MODELS.get(str(name))
    if model_class is None:
        raise ArtifactError(f"names an unknown model {name!r}.")
    try:
        model = model_class.from_dict(document)
    except Exception as exc:
        raise ArtifactError(f"is malformed: {exc}. Re-run `forecast run`.") from None
    assert isinstance(model, PurchaseModel | GammaGamma)
    return model
