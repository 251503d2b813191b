from emomesh.evaluation.adapters import ConversationTurn
from emotion.text.v1 import text_pb2
from services.text.context import context_text


def test_context_is_newest_first_and_tagged_by_whether_the_author_said_it() -> None:
    turns = [ConversationTurn("user", "I got the job"), ConversationTurn("assistant", "Congratulations!")]
    assert context_text(turns, "user") == "other: Congratulations! | me: I got the job"
    assert context_text(turns, "assistant") == "me: Congratulations! | other: I got the job"


def test_blank_turns_are_skipped_and_whitespace_is_collapsed() -> None:
    turns = [ConversationTurn("a", "  so\n\ntired  "), ConversationTurn("b", " \t ")]
    assert context_text(turns, "b") == "other: so tired"
    assert context_text([], "a") == ""


def test_proto_turns_read_the_same_as_adapter_turns() -> None:
    proto = [text_pb2.ConversationTurn(speaker="Joey", text="How you doin'?")]
    assert context_text(proto, "Rachel") == context_text([ConversationTurn("Joey", "How you doin'?")], "Rachel")
