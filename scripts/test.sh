#!/usr/bin/env bash
# Install clv-forecast with its test tooling and run the whole test suite, lint and type checks.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[test,spark]"
python -m ruff check forecast tests
python -m mypy forecast
python -m pytest "$@"
