#!/usr/bin/env bash
# Move the pins: install the newest releases that pyproject.toml allows into a fresh venv, run the whole suite
# there, and only if it passes rewrite constraints.txt with the versions it passed with. Review the diff, commit.
# Usage: bash scripts/update-pins.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
PATH="$venv/bin:$PATH" CONSTRAINTS= bash scripts/test.sh "$@"
{
    echo "# Exact versions the test suite passed with (Python 3.11). Both README commands install with them:"
    echo "#   pip install -c constraints.txt ...   Move them with: bash scripts/update-pins.sh"
    "$venv/bin/python" -m pip freeze --exclude-editable --exclude clv-forecast | sort -f
} > constraints.txt
echo "constraints.txt rewritten from $venv; review it with git diff"
