#!/usr/bin/env bash
# Lint and type checks, as CI runs them: ruff (the rule set in pyproject.toml) on the package,
# the tests and the scripts, then mypy (settings in pyproject.toml) on the package.
# Usage: bash scripts/lint.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check regionspot tests scripts
.venv/bin/mypy
