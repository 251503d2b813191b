"""Tokenization for the text emotion model with the `tokenizers` library (the model's own
tokenizer.json): the same code path in training, evaluation, benchmarks and the service.

A batch is padded to its longest sequence, not to max_length, so short sentences stay cheap.
Sequences longer than max_length tokens (special tokens included) are cut at the end (the closing
special token is kept) and flagged `truncated`. Only a prefix of each text is tokenized
(PREFIX_CHARS_PER_TOKEN characters per allowed token, cut at a space), so a 1 MB text costs the same
as a page; a text longer than that prefix is always flagged truncated, since it was not all read.

Context (services/text/context.py): a model trained with conversation context reads up to
`context_tokens` more tokens after the text's closing special token, then that special token again.
The text keeps its own max_length whatever the context; the context is cut at its end (its oldest
turns), and `truncated` is about the text alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# 32 characters per token is far more than WordPiece ever needs (English averages ~4-5 characters per
# token), so a cut prefix normally holds more than max_length tokens and the kept tokens are those of
# the full text.
PREFIX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray  # int64 [N, L], L = longest sequence in the batch
    attention_mask: np.ndarray  # int64 [N, L]
    tokens: list[int]  # tokens fed to the model per text (special tokens included, context excluded)
    truncated: list[bool]  # the text had more than max_length tokens and was cut
    context_tokens: list[int] | None = None  # context tokens read per text, when contexts were given


class TextTokenizer:
    def __init__(self, tokenizer_json: Path, max_length: int, context_tokens: int = 0) -> None:
        if max_length < 8:
            raise ValueError("max_length must be at least 8 tokens")
        if context_tokens < 0:
            raise ValueError("context_tokens must not be negative")
        self.path = tokenizer_json
        self.max_length = max_length
        self.context_tokens = context_tokens
        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        # The file may carry its own padding/truncation settings (the MiniLM one pads to 128):
        # ours are set here. Truncating to max_length + 1 tells truncated texts apart from texts of
        # exactly max_length tokens; the extra token is removed below.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length + 1)
        # BERT-style vocabularies pad with [PAD], RoBERTa-style ones with <pad> (id 1, not 0).
        pad_ids = [self._tokenizer.token_to_id(token) for token in ("[PAD]", "<pad>")]
        self.pad_id = next((i for i in pad_ids if i is not None), 0)
        self.prefix_chars = max_length * PREFIX_CHARS_PER_TOKEN
        self._context_tokenizer: Tokenizer | None = None
        if context_tokens:
            self._context_tokenizer = Tokenizer.from_file(str(tokenizer_json))
            self._context_tokenizer.no_padding()
            self._context_tokenizer.enable_truncation(context_tokens)

    @staticmethod
    def _cut(text: str, chars: int) -> str:
        if len(text) <= chars:
            return text
        cut = text[:chars]
        # Cut at the last space so no word is split (a split word could tokenize differently).
        space = cut.rfind(" ", chars // 2)
        return cut[:space] if space > 0 else cut

    def _prefix(self, text: str) -> str:
        return self._cut(text, self.prefix_chars)

    def _context_ids(self, contexts: list[str]) -> list[list[int]]:
        """Each context's first context_tokens tokens, without special tokens ([] for "")."""
        if self._context_tokenizer is None:
            return [[] for _ in contexts]
        chars = self.context_tokens * PREFIX_CHARS_PER_TOKEN
        encodings = self._context_tokenizer.encode_batch(
            [self._cut(c, chars) for c in contexts], add_special_tokens=False
        )
        return [list(e.ids) if c else [] for c, e in zip(contexts, encodings, strict=True)]

    def encode(self, texts: list[str], contexts: list[str] | None = None) -> TokenBatch:
        """Token ids of `texts`; with `contexts` (one per text, "" for none, see context.py) and a
        context budget, each text is followed by its context's tokens."""
        if contexts is not None and len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        context_ids = self._context_ids(contexts) if contexts is not None else None
        encodings = self._tokenizer.encode_batch([self._prefix(t) for t in texts])
        sequences: list[list[int]] = []
        truncated: list[bool] = []
        for text, encoding in zip(texts, encodings, strict=True):
            ids = list(encoding.ids)
            cut = len(ids) > self.max_length or len(text) > self.prefix_chars
            if len(ids) > self.max_length:
                # Keep the closing special token ([SEP] / </s>) the model was trained with.
                ids = [*ids[: self.max_length - 1], ids[-1]]
            sequences.append(ids)
            truncated.append(cut)
        # Counted before the context is appended: they describe the text alone.
        tokens = [len(s) for s in sequences]
        read_context = [len(ids) for ids in context_ids] if context_ids is not None else None
        if context_ids is not None:
            for ids, extra in zip(sequences, context_ids, strict=True):
                if extra:
                    # The text's closing special token separates it from its context and closes it.
                    ids += [*extra, ids[-1]]
        longest = max((len(s) for s in sequences), default=0)
        input_ids = np.full((len(sequences), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), longest), dtype=np.int64)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return TokenBatch(input_ids, attention_mask, tokens, truncated, read_context)
