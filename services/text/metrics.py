"""Text-specific metrics; the RPC and Triton metrics come from emomesh.metrics."""

from prometheus_client import Counter, Histogram

TEXTS_BY_ROUTE = Counter(
    "emomesh_text_texts_total",
    "Texts analysed, by how they were read: native (English), multilingual (another language, read by "
    "the multilingual model), translated, untranslated (another language, read by the English model "
    "without translation), unreadable (no letters at all).",
    ["route"],
)
TOKENS_PER_TEXT = Histogram(
    "emomesh_text_tokens_per_text", "Tokens fed to the model per text.", buckets=(4, 8, 16, 32, 48, 64, 128, 256, 512)
)
TRUNCATED_TEXTS = Counter("emomesh_text_truncated_total", "Texts cut to the model's maximum length.")
TRANSLATION_SECONDS = Histogram(
    "emomesh_text_translation_duration_seconds",
    "Time of one translation call, by outcome.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ITEM_ERRORS = Counter(
    "emomesh_text_batch_item_errors_total",
    "AnalyzeTexts items answered with an error of their own (the rest of the batch was analysed), by status.",
    ["code"],
)
CONTEXT_TOKENS_PER_TEXT = Histogram(
    "emomesh_text_context_tokens_per_text",
    "Tokens of conversation context the model read with a text, for texts sent with context (0: the model or "
    "the text's route reads none).",
    buckets=(0, 8, 16, 32, 48, 64, 128, 256),
)
