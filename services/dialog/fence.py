"""Fencing user-written text inside a prompt (a custom persona, a Describe clue) so that it cannot
end its block early and speak with the prompt's own voice.

Two defences, the second not relying on the first:

1. The fence markers carry a per-request random nonce (`new_nonce`), announced in the prompt. The
   user cannot predict it, so nothing they write can close the block: a look-alike marker without
   the nonce is just part of the description.
2. `sanitize_fenced_text` normalises the text and removes anything that looks like a marker.
   Normalising comes first (NFKC, then invisible and control characters out), so a marker split by
   a zero-width character cannot re-form after the invisible character is removed; and the whole
   is repeated until nothing changes (at most MAX_PASSES passes, then the text is refused).
   Markers are found on a "skeleton" of the text: compatibility-decomposed, accents and other
   combining marks dropped, look-alike letters from other scripts mapped to the ASCII letter they
   imitate, upper-cased. So `<<<`, "USER_PERSONA" with Cyrillic or fullwidth letters, with combining
   marks on its letters, and a much-less-than sign followed by `<` all count as markers.
"""

from __future__ import annotations

import functools
import re
import secrets
import unicodedata

from emomesh.errors import InvalidInput

# Passes of normalise + remove markers before giving up; real text is stable after one or two.
MAX_PASSES = 8

# Line breaks other than "\n" (what str.splitlines splits on): kept as line breaks, so the text's
# line structure stays what the user sees, but always as a plain "\n".
LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# Default-ignorable code points (Unicode DerivedCoreProperties) that are not already in a "C"
# category (format, control, unassigned): they render as nothing. Variation selectors, the
# combining grapheme joiner, Hangul fillers, Mongolian free variation selectors, Khmer inherent
# vowels; plus the Braille blank, which is not ignorable but shows as an empty cell.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

# Characters from other scripts (and symbols) that look like the brackets and letters of a fence
# marker, mapped to what they imitate: a subset of Unicode's confusables.txt, enough for "<", ">",
# "USER" and "PERSONA". Escaped, since in the source they would look like the ASCII they imitate.
# Fullwidth, small and mathematical forms need no entry: NFKC folds them to ASCII first.
CONFUSABLES: dict[str, str] = {
    # angle quotation marks, arrowheads, Canadian syllabics, runic, angle brackets, ornaments
    **dict.fromkeys("\u2039\u02c2\u1438\u16b2\u3008\u27e8\u276e\U0001d236", "<"),
    **dict.fromkeys("\u203a\u02c3\u1433\u3009\u27e9\u276f\U0001d237", ">"),
    # guillemets count as one bracket (French quotes must survive), much-less-than signs as two or three
    **{"\u00ab": "<", "\u226a": "<<", "\u22d8": "<<<", "\u00bb": ">", "\u226b": ">>", "\u22d9": ">>>"},
    # Cyrillic, Greek, Armenian, Cherokee, Coptic, runic and small-capital look-alikes
    **dict.fromkeys("\u0410\u0430\u0391\u03b1\u0251\u1d00\u13aa", "A"),
    **dict.fromkeys("\u0415\u0435\u0395\u03b5\u1d07\u13ac", "E"),
    **dict.fromkeys("\u039d\u0274\u2c9a", "N"),
    **dict.fromkeys("\u041e\u043e\u039f\u03bf\u03c3\u1d0f\u0555\u0585\u0966" + "0", "O"),
    **dict.fromkeys("\u0420\u0440\u03a1\u03c1\u1d18\u13e2", "P"),
    **dict.fromkeys("\u0280\u13a1\u16b1", "R"),
    **dict.fromkeys("\u0405\u0455\u054f\ua731\u13da", "S"),
    **dict.fromkeys("\u054d\u057d\u1d1c\u03c5\u222a\u22c3", "U"),
}

# On the skeleton: a run of two or more angle brackets (every marker starts or ends with three),
# and the marker words, whether joined by an underscore, a dash, dots or nothing (but not by a
# space, so "user personality" is left alone).
SKELETON_MARKERS = re.compile(r"<{2,}|>{2,}|USER[^A-Z0-9\s]{0,3}PERSONA")


def is_invisible(c: str) -> bool:
    code = ord(c)
    return any(low <= code <= high for low, high in _INVISIBLE_RANGES)


def normalise(text: str) -> str:
    """NFKC; line breaks as "\\n"; every kind of space as " "; format characters (zero-width,
    bidi embeddings/overrides/isolates, BOM, soft hyphen, tags), controls other than "\\n" and
    "\\t", private-use, surrogate, unassigned and other invisible code points removed."""
    kept: list[str] = []
    for c in unicodedata.normalize("NFKC", text.replace("\r\n", "\n")):
        if c in "\n\t":
            kept.append(c)
        elif c in LINE_BREAKS:
            kept.append("\n")
        else:
            category = unicodedata.category(c)
            if category == "Zs":
                kept.append(" ")
            elif category[0] != "C" and not is_invisible(c):
                kept.append(c)
    return "".join(kept)


@functools.lru_cache(maxsize=4096)
def _skeleton_of(c: str) -> str:
    """What one (already normalised) character looks like, for finding markers: look-alikes
    mapped, compatibility-decomposed, combining marks dropped, ASCII upper-cased."""
    if c in CONFUSABLES:
        return CONFUSABLES[c]
    parts = []
    for d in unicodedata.normalize("NFKD", c):
        if unicodedata.category(d)[0] == "M":
            continue
        d = CONFUSABLES.get(d, d)
        parts.append(d.upper() if d.isascii() else d)
    return "".join(parts)


def remove_markers(text: str) -> str:
    """Replaces every span whose skeleton is a marker (and the combining marks trailing it) by a
    space."""
    skeleton: list[str] = []
    origin: list[int] = []  # origin[k]: the index in text of the character skeleton[k] came from
    for i, c in enumerate(text):
        for s in _skeleton_of(c):
            skeleton.append(s)
            origin.append(i)
    pieces: list[str] = []
    done = 0
    for match in SKELETON_MARKERS.finditer("".join(skeleton)):
        start, end = origin[match.start()], origin[match.end() - 1] + 1
        while end < len(text) and unicodedata.category(text[end])[0] == "M":
            end += 1
        start = max(start, done)  # defensive: spans never overlap, as no character maps to mixed kinds
        pieces += [text[done:start], " "]
        done = max(done, end)
    pieces.append(text[done:])
    return "".join(pieces)


def sanitize_fenced_text(text: str, what: str = "the text", *, max_passes: int = MAX_PASSES) -> str:
    """Normalises and removes markers until the text no longer changes; stripped. Refuses
    (InvalidInput, naming `what`) text that is still changing after max_passes passes."""
    for _ in range(max_passes):
        cleaned = remove_markers(normalise(text)).strip()
        if cleaned == text:
            return cleaned
        text = cleaned
    raise InvalidInput(f"{what} could not be normalised (it keeps changing); remove unusual characters")


def contains_marker(text: str) -> bool:
    """Whether anything in text looks like a fence marker (the check sanitize_fenced_text ensures)."""
    return remove_markers(normalise(text)) != normalise(text)


def new_nonce(*texts: str) -> str:
    """A random code for this request's fence markers that occurs in none of texts."""
    while True:
        nonce = secrets.token_hex(8)
        if not any(nonce in text for text in texts):
            return nonce
