#!/usr/bin/env bash
# Regenerates the Python stubs (with .pyi) of every proto under protos/ into src/emotion/.
# CI runs this and fails when the tree changes (stub drift).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf src/emotion
mkdir -p src
mapfile -t protos < <(cd protos && find emotion -name '*.proto' | sort)
(cd protos && "../$PY" -m grpc_tools.protoc -I . --python_out=../src --pyi_out=../src --grpc_python_out=../src "${protos[@]}")
# Regular packages (not namespace packages) so that setuptools and mypy find them.
find src/emotion -type d -exec sh -c 'for d; do : > "$d/__init__.py"; done' _ {} +
touch src/emotion/py.typed
echo "generated $(find src/emotion -name '*_pb2.py' | wc -l) modules into src/emotion"
