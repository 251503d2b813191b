import pytest

from services.text.language import detect_language, normalize_hint


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("I am so happy today!", "en"),
        ("ok", "en"),  # langdetect alone says Slovak
        ("lol that was sooo good omg", "en"),
        ("我今天很高兴", "zh"),  # langdetect alone says Korean
        ("今日はとても楽しい", "ja"),
        ("오늘 정말 행복해요", "ko"),
        ("Das ist wirklich eine schreckliche Nachricht für uns alle", "de"),
        ("Estoy muy feliz hoy con mis amigos de la escuela", "es"),
        ("Ik ben zo blij vandaag, het is echt een mooie dag", "nl"),
        ("Jsem dnes tak smutny, protoze to je konec", "cs"),
        ("I can't believe you did that to me, it was the worst day of my life", "en"),
        ("Это ужасно, я очень расстроен", "ru"),
    ],
)
def test_detects_the_language(text: str, language: str) -> None:
    assert detect_language(text).language == language


def test_text_without_letters_is_undetermined() -> None:
    for text in ("😀😂🎉", "1234 !!! ???", "   "):
        detection = detect_language(text)
        assert detection.language == "und" and detection.letters == 0


def test_mixed_scripts_are_flagged_and_the_majority_wins() -> None:
    english = detect_language("I really love this 蛋糕 cake so much")
    assert english.language == "en" and not english.mixed_scripts
    chinese = detect_language("这个 cake 真的太好吃了我很喜欢")
    assert chinese.language == "zh" and chinese.mixed_scripts
    half = detect_language("happy 快乐快乐")
    assert half.mixed_scripts


def test_detection_is_deterministic() -> None:
    text = "Ceci est un texte plutôt ambigu, mais répété."
    assert len({detect_language(text).language for _ in range(5)}) == 1


def test_language_hint_is_normalised_or_refused() -> None:
    assert normalize_hint("") is None
    assert normalize_hint(" ZH_cn ") == "zh"
    assert normalize_hint("en-US") == "en"
    with pytest.raises(ValueError, match="ISO 639-1"):
        normalize_hint("english please")
    with pytest.raises(ValueError, match="ISO 639-1"):
        normalize_hint("e1")


def test_english_shortcut_needs_enough_english_function_words() -> None:
    from services.text.language import looks_english

    assert looks_english("I can't believe you did that to me")
    assert not looks_english("Estoy muy feliz hoy con mis amigos")
    assert not looks_english("the end")  # too few words to judge
    assert not looks_english("I love this café so much")  # not ASCII: left to langdetect
