from emotion.common.v1 import common_pb2
from services.dialog.history import StoredTurn
from services.dialog.prompts import estimate_tokens, select_history


def turns(n: int, text: str = "word " * 20) -> list[StoredTurn]:
    return [StoredTurn("user" if i % 2 == 0 else "assistant", f"{i} {text}", None, float(i)) for i in range(n)]


def test_token_estimate_counts_wide_characters_as_tokens() -> None:
    assert estimate_tokens("") == 4
    assert estimate_tokens("abcd" * 10) == 14
    assert estimate_tokens("你好世界") == 8


def test_window_keeps_the_newest_turns_within_the_budget_oldest_first() -> None:
    history = turns(10)
    cost = estimate_tokens(history[0].text)
    selected = select_history(history, token_budget=cost * 4 + 1)
    assert [t.time for t in selected] == [6.0, 7.0, 8.0, 9.0]


def test_window_starts_with_a_user_turn() -> None:
    history = turns(10)
    cost = estimate_tokens(history[0].text)
    selected = select_history(history, token_budget=cost * 3 + 1)  # 7, 8, 9: 7 is an assistant turn
    assert [t.time for t in selected] == [8.0, 9.0]


def test_zero_budget_and_a_huge_turn_give_no_history() -> None:
    assert select_history(turns(4), token_budget=0) == []
    huge = [*turns(2), StoredTurn("user", "x" * 100_000, None, 9.0)]
    assert select_history(huge, token_budget=500) == []


def test_stored_turns_round_trip_through_json_and_bad_entries_are_skipped() -> None:
    emotion = common_pb2.FusedEmotion(conflict=True, polarity=common_pb2.POLARITY_NEGATIVE)
    turn = StoredTurn("user", "héllo", emotion, 12.5)
    assert StoredTurn.from_json(turn.to_json()) == turn
    for bad in ("not json", "{}", '{"role": "system", "text": "x"}', '{"role": "user", "text": 3}'):
        assert StoredTurn.from_json(bad) is None
