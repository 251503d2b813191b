#!/usr/bin/env bash
# Command 2 of the README: install (with dev tools), then lint, type-check, check generated files
# for drift and run every test (unit, integration against the real tritonserver and redis-server,
# end-to-end through the embedded stack).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
. .venv/bin/activate
echo "== lint"
ruff check src services tests bench
ruff format --check src/emomesh services tests bench
mypy
echo "== generated files"
scripts/check_generated.sh
echo "== tests"
# Strict: a test tool that is missing (setup.sh installed them all) fails its tests instead of
# skipping them (tests/tools.py). -rs lists every skip with its reason: only the documented ones
# (GPU-only metrics, no LLM API key) may remain.
export EMOMESH_STRICT_TESTS=1
python -m pytest -p no:cacheprovider -rs "$@"
