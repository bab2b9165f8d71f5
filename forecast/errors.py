"""The errors the library raises and the warnings it emits.

Every user-facing failure is a ``ForecastError``; its message says what is wrong, where,
and what to do. The CLI turns these into a one-paragraph message and a non-zero exit code.
"""

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class ForecastError(Exception):
    """Base class for every error a user can cause or fix."""


class ConfigError(ForecastError, ValueError):
    """The run configuration is missing, malformed or inconsistent."""


class DataError(ForecastError, ValueError):
    """The transaction log cannot be read or violates the data contract."""


class FitError(ForecastError):
    """A model did not converge or gave unusable parameters."""


class NotFittedError(FitError, ValueError, AttributeError):
    """A model was asked for what only a fit teaches it (parameters, predictions) before it was fitted.

    Also a ValueError and an AttributeError, as scikit-learn's ``NotFittedError``: ``hasattr(model, "params_")``
    is False before fit.
    """


class ArtifactError(ForecastError):
    """A fitted-model artifact is missing, corrupt or of an incompatible version."""


class OutputError(ForecastError):
    """The outputs cannot be written (folder not writable, disk full, existing run)."""


class EngineError(ForecastError):
    """The query engine (DuckDB or Spark) ran out of memory or spill space, or failed, under the configured settings."""


def out_of_memory(exc: BaseException) -> BaseException | None:
    """The out-of-memory error behind ``exc``: itself, or one it was raised from or while handling; None if none.

    Python's MemoryError, pyarrow's ArrowMemoryError (``pyarrow.lib``, a MemoryError too) and DuckDB's
    OutOfMemoryException count. pyarrow and DuckDB are looked up only if already imported: when they are not,
    none of their errors can have been raised.
    """
    kinds: tuple[type[BaseException], ...] = (MemoryError,)
    for module, name in (("pyarrow.lib", "ArrowMemoryError"), ("duckdb", "OutOfMemoryException")):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            kinds += (kind,)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def clip(text: str, limit: int = 200) -> str:
    """Return ``text``, or its beginning and end around " ... " when it is longer than ``limit`` characters.

    Messages quote what a user gave through this, so that a huge value never makes a huge message.
    """
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[: limit - tail - 5]} ... {text[-tail:]}"


class ForecastWarning(UserWarning):
    """A result is usable but degraded (weak fit, few repeat buyers, broken assumption)."""


@contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """Record every ForecastWarning raised in the block; the list holds their messages once the block ends.

    Other warnings raised in the block are recorded and dropped, as the library's callers always did.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ForecastWarning)
        yield messages
    messages.extend(str(w.message) for w in caught if issubclass(w.category, ForecastWarning))
