#!/usr/bin/env bash
# Lint, type-check and run every test: unit tests here, real-kernel tests in the test VM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== fuzz"; bash scripts/fuzz.sh replay && bash scripts/fuzz.sh run "${CSI_VDUSE_FUZZ_SECONDS:-180}"
echo "== pytest"; .venv/bin/python -m pytest "$@"
echo "== image"; bash scripts/build-image.sh
