"""Fusion-specific metrics; RPC latency and per-modality availability/results come from emomesh.metrics."""

from prometheus_client import Counter, Histogram

FUSED_MODALITIES = Histogram(
    "emomesh_fusion_fused_modalities", "Modalities that took part in one fused result.", buckets=(0, 1, 2, 3)
)
FUSION_CONFLICTS = Counter("emomesh_fusion_conflicts_total", "Fused results where modalities strongly disagreed.")
