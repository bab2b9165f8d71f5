#!/usr/bin/env bash
# Install clv-forecast with its test tooling at the pinned versions and run the whole test suite, lint and types.
# Usage: bash scripts/test.sh [extra pytest arguments]
# CONSTRAINTS= (empty) installs the newest releases pyproject.toml allows instead (scripts/update-pins.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
# The report test renders report.html in headless Chromium (Debian package `chromium`).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
constraints="${CONSTRAINTS-constraints.txt}"
python -m pip install --quiet --disable-pip-version-check ${constraints:+-c "$constraints"} -e ".[test,spark]"
python -m ruff check forecast tests
python -m ruff format --check forecast tests
python -m mypy forecast
python -m pytest "$@"
