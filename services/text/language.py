"""Language detection: a Unicode-script check first, `langdetect` for alphabetic scripts after.

Why this pair: `langdetect` (a port of Google's language-detection, 55 languages, pure Python, its
profiles ship in the package: no download, no native code) is small and well known, but it is
randomised (we fix its seed so the same text always gets the same answer) and weak on short or
CJK text: it calls "我今天很高兴" Korean and "ok" Slovak. The script of the letters settles CJK
without a statistical model (kana -> ja, hangul -> ko, han -> zh), and short ASCII-only text is
taken as English, which is what the classifier reads anyway. Only the first DETECT_CHARS
characters are looked at, so a 1 MB text costs the same as a paragraph."""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass

from langdetect import DetectorFactory, detect_langs
from langdetect.lang_detect_exception import LangDetectException

UNDETERMINED = "und"
DETECT_CHARS = 2000
# Below this many letters, langdetect's answer for plain ASCII text is mostly noise.
MIN_LETTERS_FOR_STATISTICS = 20
# English is accepted when langdetect gives it at least this probability: mixed or informal English
# ("lol that was sooo good") often comes out as a spread over several Latin languages.
MIN_ENGLISH_PROBABILITY = 0.3

# Function words that are frequent in English and rare in other Latin-script languages. When at least
# ENGLISH_WORD_SHARE of an ASCII text's words are among them, the text is English without asking
# langdetect, which costs ~2 ms per text (most of the service's per-text CPU time besides the model).
ENGLISH_FUNCTION_WORDS = frozenset(
    [
        "the",
        "and",
        "you",
        "your",
        "with",
        "what",
        "this",
        "that",
        "have",
        "has",
        "been",
        "my",
        "of",
        "it",
        "it's",
        "i",
        "i'm",
        "to",
        "are",
        "for",
        "not",
        "so",
        "me",
        "they",
        "he",
        "she",
        "his",
        "her",
        "do",
        "don't",
        "can't",
        "just",
        "was",
        "were",
        "would",
        "will",
        "be",
        "about",
        "from",
    ]
)
ENGLISH_WORD_SHARE = 0.3

_seed_lock = threading.Lock()
_word = re.compile(r"[a-z']+")


def looks_english(sample: str) -> bool:
    """Cheap check for plain English: ASCII only and at least 30% English function words (3+ words)."""
    if not sample.isascii():
        return False
    words = _word.findall(sample.lower())
    if len(words) < 3:
        return False
    return sum(w in ENGLISH_FUNCTION_WORDS for w in words) / len(words) >= ENGLISH_WORD_SHARE


@dataclass(frozen=True)
class Detection:
    language: str  # ISO 639-1 code, or "und"
    # The dominant writing system of the letters ("latin", "han", "none", ...).
    script: str
    # More than one script holds at least 20% of the letters, e.g. English with Chinese words.
    mixed_scripts: bool
    letters: int


def script_of(char: str) -> str:
    """Coarse script of a letter, from its Unicode name (no extra dependency)."""
    name = unicodedata.name(char, "")
    for prefix, script in (
        ("CJK", "han"),
        ("HIRAGANA", "kana"),
        ("KATAKANA", "kana"),
        ("HANGUL", "hangul"),
        ("LATIN", "latin"),
        ("CYRILLIC", "cyrillic"),
        ("GREEK", "greek"),
        ("ARABIC", "arabic"),
        ("HEBREW", "hebrew"),
        ("DEVANAGARI", "devanagari"),
        ("THAI", "thai"),
    ):
        if name.startswith(prefix):
            return script
    return "other"


def letter_scripts(text: str) -> Counter[str]:
    # Letters only (category L*): emoji, digits, punctuation and spaces carry no language.
    return Counter(script_of(c) for c in text if unicodedata.category(c).startswith("L"))


def _statistical(text: str) -> list[tuple[str, float]]:
    with _seed_lock:
        # langdetect draws random numbers per call; a fixed seed makes it deterministic. The lock
        # keeps the (global) seed and the call together when several threads detect at once.
        DetectorFactory.seed = 0
        try:
            return [(c.lang, c.prob) for c in detect_langs(text)]
        except LangDetectException:
            return []


def warm_up() -> None:
    """Loads langdetect's language profiles (~0.1-0.5 s, done lazily on its first call) at start-up,
    so the first request does not pay for it."""
    _statistical("Ceci est une phrase pour charger les profils.")


def detect_language(text: str) -> Detection:
    sample = text[:DETECT_CHARS]
    scripts = letter_scripts(sample)
    letters = sum(scripts.values())
    if letters == 0:
        return Detection(UNDETERMINED, "none", False, 0)
    dominant, _ = scripts.most_common(1)[0]
    mixed = sum(1 for count in scripts.values() if count / letters >= 0.2) > 1
    # Japanese mixes han with kana; any kana means Japanese.
    if scripts["kana"]:
        return Detection("ja", "kana", mixed, letters)
    if dominant == "hangul":
        return Detection("ko", dominant, mixed, letters)
    if dominant == "han":
        # langdetect tells simplified from traditional (zh-cn / zh-tw); the code we report is "zh".
        return Detection("zh", dominant, mixed, letters)
    latin_ascii = all(c.isascii() for c in sample if script_of(c) == "latin")
    if dominant == "latin" and scripts["latin"] < MIN_LETTERS_FOR_STATISTICS and latin_ascii:
        return Detection("en", dominant, mixed, letters)
    if dominant == "latin" and looks_english(sample):
        return Detection("en", dominant, mixed, letters)
    candidates = _statistical(sample)
    if not candidates:
        return Detection(UNDETERMINED, dominant, mixed, letters)
    if dominant == "latin" and any(lang == "en" and p >= MIN_ENGLISH_PROBABILITY for lang, p in candidates):
        return Detection("en", dominant, mixed, letters)
    return Detection(candidates[0][0].split("-")[0], dominant, mixed, letters)


def normalize_hint(hint: str) -> str | None:
    """The caller's language hint as a lowercase ISO 639 code, None when absent; raises ValueError
    for something that is not a language code."""
    cleaned = hint.strip().lower().replace("_", "-")
    if not cleaned:
        return None
    primary = cleaned.split("-")[0]
    if not (2 <= len(primary) <= 3 and primary.isascii() and primary.isalpha()):
        raise ValueError(f"language_hint {hint[:20]!r} is not an ISO 639-1 code such as 'en' or 'zh'")
    return primary
