"""Caption classifier: does a caption / alt text say "cat"? Zero dependencies.

Word-boundary aware (Python's Unicode \\b), multilingual, and careful with false
friends: English "chat", "catalog", "Catherine", "category", "cattle" never match
(nor German "Kater" = hangover, Danish "killing" = kitten but English "killing",
Indonesian "kota" = city);
French "chat" only after a French determiner ("le chat", "mon chat"); all-caps "CAT"
(Caterpillar machines, CAT scans) and "big cat(s)" (lions, tigers) do not count.
Scripts written without spaces (Chinese, Japanese, Thai) and Korean, whose nouns
take attached particles (고양이가), match as substrings.
"""

from __future__ import annotations

import re

_WORDS = [
    # English
    "cat", "cats", "kitten", "kittens", "kitty", "kitties", "kitteh", "pussycat", "pussycats",
    "tabby", "tabbies", "feline", "felines", "moggy", "moggie",
    # German, Dutch, Scandinavian
    "katze", "katzen", "kätzchen", "katten", "katje", "poes", "poesje",
    "katt", "katter", "kattunge", "kattungar",
    # Romance languages (French "chat" is handled with its determiners below)
    "chats", "chaton", "chatons", "gato", "gatos", "gata", "gatas", "gatito", "gatitos",
    "gatinho", "gatinhos", "gatto", "gatti", "gattino", "gattini", "gattina", "pisica", "pisică",
    # Slavic, Baltic, Finnish, Hungarian, Turkish, Greek, Indonesian, Vietnamese
    "кошка", "кошки", "кошку", "кошкой", "кошек", "кот", "кота", "коту", "котом", "коты", "котов",
    "котик", "котики", "котёнок", "котенок", "котята", "кіт", "кішка", "коти",
    "kot", "koty", "kotek", "kotka", "kotki", "kociak", "kočka", "kočky", "kotě", "koťata",
    "kissa", "kissat", "kissan", "kissoja", "kissanpentu", "macska", "cica", "kedi", "kedisi",
    "kediler", "γάτα", "γάτες", "γάτος", "γατάκι", "γατάκια", "kucing", "mèo",
    # Semitic, Indic
    "חתול", "חתולה", "חתולים", "قطة", "قطط", "بسة", "बिल्ली", "बिल्लियाँ",
]
_SUBSTRINGS = ["猫", "貓", "ねこ", "ネコ", "고양이", "แมว"]
_FRENCH_DETERMINERS = "le|un|mon|ton|son|du|au|ce|notre|votre|leur|joli|petit|beau|gros"

_WORD_RE = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, set(_WORDS)), key=len, reverse=True))
                      + r")\b", re.IGNORECASE)
_FRENCH_RE = re.compile(rf"\b(?:{_FRENCH_DETERMINERS})\s+chat\b", re.IGNORECASE)
_SUBSTRING_RE = re.compile("|".join(map(re.escape, _SUBSTRINGS)))
_BIG_CAT_RE = re.compile(r"\bbig\s+cats?\b", re.IGNORECASE)


def caption_is_cat(caption: str | None) -> bool:
    """True when the caption names a domestic cat in one of the languages above."""
    if not caption:
        return False
    if _SUBSTRING_RE.search(caption) or _FRENCH_RE.search(caption):
        return True
    text = _BIG_CAT_RE.sub(" ", caption)
    return any(m.group(0) != "CAT" for m in _WORD_RE.finditer(text))
