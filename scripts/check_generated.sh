#!/usr/bin/env bash
# Fails when generated files are stale: the gRPC stubs (protos/ -> src/emotion) and the production
# Triton configs (deploy/triton/models.yaml + config.pbtxt.j2 -> deploy/triton/models/*/config.pbtxt).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OUT_DIR="$tmp/stubs" scripts/gen_protos.sh >/dev/null
if ! diff -r "$tmp/stubs/emotion" src/emotion >"$tmp/stubs.diff"; then
  echo "gRPC stubs are stale: run scripts/gen_protos.sh and commit src/emotion" >&2
  head -40 "$tmp/stubs.diff" >&2
  exit 1
fi
.venv/bin/emomesh triton render --variant gpu --out "$tmp/triton" >/dev/null
for config in "$tmp"/triton/*/config.pbtxt; do
  name=$(basename "$(dirname "$config")")
  if ! diff -u "deploy/triton/models/$name/config.pbtxt" "$config" >&2; then
    echo "deploy/triton/models/$name/config.pbtxt is stale: run 'emomesh triton render --variant gpu'" >&2
    exit 1
  fi
done
echo "generated files are current"
