#!/usr/bin/env bash
# The screenshots of docs/console.md, made by the console's browser tests (tests/e2e/test_console.py) as they
# use the page: a real chromium with a fake camera (skimage's astronaut) and a fake microphone (espeak-ng), the
# whole embedded stack, and the tests' local OpenAI-compatible server as the LLM (its one canned reply).
# Usage: scripts/console_screenshots.sh [DIR]   (default docs/figures/console; needs scripts/setup.sh --dev)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/figures/console}
mkdir -p "$out"
. .venv/bin/activate
EMOMESH_CONSOLE_SCREENSHOTS="$(realpath "$out")" python -m pytest -p no:cacheprovider -q tests/e2e/test_console.py
ls -l "$out"
