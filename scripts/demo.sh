#!/usr/bin/env bash
# Command 1 of the README: install, start the whole embedded stack on this machine (CPU), analyse the
# bundled samples through it, print the results and stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/emomesh demo "$@"
