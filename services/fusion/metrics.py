"""Fusion-specific metrics; RPC latency and per-modality availability/results come from emomesh.metrics."""

from prometheus_client import Counter, Gauge, Histogram

FUSED_MODALITIES = Histogram(
    "emomesh_fusion_fused_modalities", "Modalities that took part in one fused result.", buckets=(0, 1, 2, 3)
)
FUSION_CONFLICTS = Counter("emomesh_fusion_conflicts_total", "Fused results where modalities strongly disagreed.")

# AnalyzeStream (services/fusion/stream.py).
STREAMS_ACTIVE = Gauge("emomesh_fusion_streams_active", "AnalyzeStream calls in flight.")
STREAM_ENDS = Counter(
    "emomesh_fusion_stream_ends_total",
    "AnalyzeStream calls that ended, by how: ended (the client's end or half-close), cancelled (the client "
    "cancelled or went away), limit (a stream limit), refused (too many streams), error (bad input or a failure).",
    ["reason"],
)
STREAM_FRAMES = Counter(
    "emomesh_fusion_stream_frames_total",
    "Live frames by outcome: analysed, dropped (a newer frame replaced it before the face lane took it, or was "
    "answered first), failed (undecodable, or the vision service failed).",
    ["outcome"],
)
STREAM_FACE_LATENCY = Histogram(
    "emomesh_fusion_stream_face_latency_seconds",
    "From a live frame's arrival to its faces being sent.",
    buckets=(0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0),
)
STREAM_SPEECH_LATENCY = Histogram(
    "emomesh_fusion_stream_speech_latency_seconds",
    "From the last sample of a live audio window arriving to its speech result being sent (the words come apart).",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
