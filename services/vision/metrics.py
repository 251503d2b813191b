"""Vision-specific metrics; the RPC and Triton metrics come from emomesh.metrics."""

from prometheus_client import Counter, Histogram

FACES_PER_IMAGE = Histogram(
    "emomesh_vision_faces_per_image", "Faces found per analysed image.", buckets=(0, 1, 2, 3, 5, 10, 20)
)
IMAGE_STAGE_SECONDS = Histogram(
    "emomesh_vision_stage_duration_seconds",
    "Time per pipeline stage of one image.",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BATCH_ITEM_ERRORS = Counter(
    "emomesh_vision_batch_item_errors_total",
    "AnalyzeImages items answered with an error of their own (the rest of the batch was analysed), by status.",
    ["code"],
)
