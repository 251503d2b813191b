import numpy as np
import pytest

from services.text.config import DEFAULT_TOKENIZER
from services.text.tokenize import PREFIX_CHARS_PER_TOKEN, TextTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(DEFAULT_TOKENIZER, max_length=16)


def test_batch_is_padded_to_its_longest_text_not_to_max_length(tokenizer: TextTokenizer) -> None:
    batch = tokenizer.encode(["hi", "what a lovely day"])
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    # [CLS] what a lovely day [SEP] = 6 tokens; "hi" = 3 tokens, padded with [PAD] (id 0).
    assert batch.input_ids.shape == (2, 6)
    assert batch.tokens == [3, 6]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch.input_ids[0, 3:].tolist() == [tokenizer.pad_id] * 3
    assert batch.truncated == [False, False]


def test_long_text_is_cut_to_max_length_with_the_closing_token_kept(tokenizer: TextTokenizer) -> None:
    exact = " ".join(["word"] * 14)  # 14 + [CLS] + [SEP] = 16 = max_length: not truncated
    longer = " ".join(["word"] * 15)
    batch = tokenizer.encode([exact, longer])
    assert batch.tokens == [16, 16]
    assert batch.truncated == [False, True]
    sep = batch.input_ids[0, -1]
    assert batch.input_ids[1, -1] == sep
    assert batch.input_ids[0].tolist() == batch.input_ids[1].tolist()


def test_huge_text_costs_a_prefix_and_gives_the_same_tokens_as_its_start(tokenizer: TextTokenizer) -> None:
    start = "I am so happy about the news today and I cannot stop smiling at all"
    huge = start + " filler" * 200_000  # ~1.4 MB
    batch = tokenizer.encode([huge, start])
    assert batch.truncated == [True, True]
    assert batch.input_ids[0].tolist() == batch.input_ids[1].tolist()
    assert len(huge) > 16 * PREFIX_CHARS_PER_TOKEN


def test_emoji_and_cjk_become_tokens_not_errors(tokenizer: TextTokenizer) -> None:
    batch = tokenizer.encode(["😀😀😀", "我很高兴", "mixed 中文 text"])
    assert all(t >= 3 for t in batch.tokens)
    assert batch.truncated == [False, False, False]


def test_empty_batch_and_too_small_max_length() -> None:
    tokenizer = TextTokenizer(DEFAULT_TOKENIZER, max_length=8)
    assert tokenizer.encode([]).input_ids.shape == (0, 0)
    with pytest.raises(ValueError, match="at least 8"):
        TextTokenizer(DEFAULT_TOKENIZER, max_length=4)


def test_context_follows_the_text_and_its_closing_token_closes_it_again() -> None:
    tokenizer = TextTokenizer(DEFAULT_TOKENIZER, max_length=16, context_tokens=8)
    alone = tokenizer.encode(["what a lovely day"])
    batch = tokenizer.encode(["what a lovely day", "hi"], ["other: it rained all week", ""])
    sep = int(alone.input_ids[0, -1])
    text_ids = alone.input_ids[0].tolist()
    row = batch.input_ids[0, : int(batch.attention_mask[0].sum())].tolist()
    assert row[: len(text_ids)] == text_ids and row[-1] == sep
    context_ids = row[len(text_ids) : -1]
    assert 0 < len(context_ids) <= 8 and sep not in context_ids
    # The counts say what was read: the text's tokens (as without context) and the context's apart.
    assert batch.tokens == [alone.tokens[0], 3]
    assert batch.context_tokens == [len(context_ids), 0]
    # A text without context is exactly as it would be alone.
    assert batch.input_ids[1, :3].tolist() == tokenizer.encode(["hi"]).input_ids[0].tolist()


def test_a_long_context_is_cut_at_its_end_and_never_cuts_the_text() -> None:
    tokenizer = TextTokenizer(DEFAULT_TOKENIZER, max_length=16, context_tokens=4)
    text = " ".join(["word"] * 14)  # exactly max_length with [CLS] and [SEP]
    context = "me: one two three four five six seven"
    batch = tokenizer.encode([text], [context])
    assert batch.tokens == [16] and batch.truncated == [False] and batch.context_tokens == [4]
    assert batch.input_ids.shape == (1, 16 + 4 + 1)
    newest_first = tokenizer.encode([text], ["me: one"]).input_ids[0, 16:-1].tolist()
    assert batch.input_ids[0, 16 : 16 + len(newest_first)].tolist() == newest_first


def test_a_tokenizer_without_a_context_budget_reads_texts_alone() -> None:
    tokenizer = TextTokenizer(DEFAULT_TOKENIZER, max_length=16)
    with_context = tokenizer.encode(["hi"], ["other: hello"])
    assert with_context.input_ids.tolist() == tokenizer.encode(["hi"]).input_ids.tolist()
    assert with_context.context_tokens == [0]
    with pytest.raises(ValueError, match="2 contexts for 1 texts"):
        tokenizer.encode(["hi"], ["", ""])
    with pytest.raises(ValueError, match="context_tokens must not be negative"):
        TextTokenizer(DEFAULT_TOKENIZER, max_length=16, context_tokens=-1)
