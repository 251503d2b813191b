#!/usr/bin/env bash
# Regenerates the Python stubs (with .pyi) of every proto under protos/ into src/emotion/.
# scripts/check_generated.sh regenerates into a scratch folder (OUT_DIR) and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, not resolved: the venv python is a symlink
out=$(realpath -m "${OUT_DIR:-src}")
rm -rf "$out/emotion"
mkdir -p "$out"
mapfile -t protos < <(cd protos && find emotion -name '*.proto' | sort)
(cd protos && "$PY" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${protos[@]}")
# Regular packages (not namespace packages) so that setuptools and mypy find them.
find "$out/emotion" -type d -exec sh -c 'for d; do : > "$d/__init__.py"; done' _ {} +
touch "$out/emotion/py.typed"
echo "generated $(find "$out/emotion" -name '*_pb2.py' | wc -l) modules into $out/emotion"
