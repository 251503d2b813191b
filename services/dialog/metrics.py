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
TEXT_EMOTION_READS = Counter(
    "emomesh_dialog_text_emotion_reads_total",
    "Chat messages without an emotion sent to the text service (with the session's history as context), by "
    "outcome: ok, or the gRPC status that cost the reply its emotion.",
    ["outcome"],
)
