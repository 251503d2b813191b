"""Dialog-specific metrics; RPC, LLM latency/tokens and Redis errors come from emomesh.metrics."""

from prometheus_client import Counter, Histogram

FALLBACK_REPLIES = Counter(
    "emomesh_dialog_fallback_replies_total",
    "Replies built offline instead of by the LLM, by operation and cause.",
    ["operation", "cause"],
)
HISTORY_TURNS = Histogram(
    "emomesh_dialog_history_turns",
    "Turns of history that went into one chat prompt.",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64),
)
LLM_RETRIES = Counter("emomesh_dialog_llm_retries_total", "LLM attempts retried after a retryable failure.")
