"""Speech recognition, Whisper base (the default) against tiny.en, side by side in one run: time per clip
and the language each finds.

    OMP_NUM_THREADS=1 python -m bench.bench_asr --repeats 3 --out runs/bench/asr.json

In-process, through the audio service's own Transcriber (its settings from the environment: one
CTranslate2 thread, int8, greedy decoding, Whisper's temperature fallback), on espeak-ng clips made
here: the same short English sentence `repeats` times after one warm-up (median seconds, real-time
factor), then one German and one Mandarin sentence (language, its probability, mean log-probability,
no-speech probability, text, seconds). Also the first-start cost of Whisper base: joining its two
wheel parts into an empty cache directory (checksum included) and loading the model."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import write_results
from services.audio.asr import Transcriber
from services.audio.asr_models import WHISPER_BASE, WHISPER_BASE_MODEL, WHISPER_TINY_EN, assemble_split_model
from services.audio.config import AsrSettings
from services.audio.features import SAMPLE_RATE, decode_audio

ENGLISH = "I just got the job. I am so happy, this is the best day of my life."
# (espeak-ng voice, sentence). Mandarin takes the pinyin voice: espeak-ng 1.51's `cmn` voice reads its
# romanisation's tone numbers as English words (tests/integration/test_audio.py).
OTHER_LANGUAGES = {
    "de": ("de", "Ich freue mich sehr, dich zu sehen."),
    "zh": ("cmn-latn-pinyin", "我们明天一起去北京吧。"),
}


def speak(text: str, voice: str | None = None) -> bytes:
    voice_args = ["-v", voice] if voice else []
    return subprocess.run(["espeak-ng", *voice_args, "--stdout", text], capture_output=True, check=True).stdout


def first_start_of_whisper_base() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        assemble_split_model(WHISPER_BASE_MODEL, Path(cache))
        return {"assemble_s": time.perf_counter() - start}


async def measure(model: str, english: bytes, others: dict[str, bytes], repeats: int) -> dict[str, object]:
    settings = replace(AsrSettings.from_env(), model=model, model_name=f"whisper-{model}")
    start = time.perf_counter()
    transcriber = Transcriber(settings)
    load_s = time.perf_counter() - start
    samples = decode_audio(english).samples
    try:
        await transcriber.transcribe(samples)  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            transcript = await transcriber.transcribe(samples)
            seconds.append(time.perf_counter() - start)
        duration = len(samples) / SAMPLE_RATE
        row: dict[str, object] = {
            "load_s": load_s,
            "english_clip_s": duration,
            "english_median_s": statistics.median(seconds),
            "english_real_time_factor": statistics.median(seconds) / duration,
            "english_text": transcript.text,
        }
        for language, data in others.items():
            spoken = decode_audio(data).samples
            start = time.perf_counter()
            heard = await transcriber.transcribe(spoken)
            row[language] = {
                "clip_s": len(spoken) / SAMPLE_RATE,
                "seconds": time.perf_counter() - start,
                "language": heard.language,
                "language_probability": heard.language_probability,
                "avg_logprob": heard.avg_logprob,
                "no_speech_prob": heard.no_speech_prob,
                "text": heard.text,
            }
    finally:
        transcriber.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    english = speak(ENGLISH)
    others = {language: speak(text, voice) for language, (voice, text) in OTHER_LANGUAGES.items()}
    results: dict[str, object] = {"repeats": args.repeats, "whisper_base_first_start": first_start_of_whisper_base()}
    print(f"Whisper base, joined from its wheels: {results['whisper_base_first_start']}", flush=True)
    for model in (WHISPER_BASE, WHISPER_TINY_EN):
        row = asyncio.run(measure(model, english, others, args.repeats))
        results[model] = row
        print(
            f"{model:8s} load {row['load_s']:.2f} s; English {row['english_clip_s']:.1f} s clip: "
            f"median {row['english_median_s']:.2f} s (real-time factor {row['english_real_time_factor']:.2f}) "
            f"{row['english_text']!r}",
            flush=True,
        )
        for language in OTHER_LANGUAGES:
            print(f"{model:8s} {language}: {row[language]}", flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
