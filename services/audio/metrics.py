"""Audio-specific metrics; the RPC and Triton metrics come from emomesh.metrics."""

from prometheus_client import Counter, Gauge, Histogram

AUDIO_DURATION_SECONDS = Histogram(
    "emomesh_audio_input_duration_seconds",
    "Duration of the audio clips analysed.",
    buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300, 600),
)
AUDIO_STAGE_SECONDS = Histogram(
    "emomesh_audio_stage_duration_seconds",
    "Time per pipeline stage of one clip.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SPEECH_RESULTS = Counter("emomesh_audio_speech_total", "Clips with and without detected speech.", ["speech"])
ASR_PENDING = Gauge("emomesh_audio_asr_pending", "Transcriptions running or waiting for a worker thread.")
ASR_REJECTED = Counter("emomesh_audio_asr_rejected_total", "Transcriptions refused because the queue was full.")
