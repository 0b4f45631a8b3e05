"""The sticker themes and the matcher that maps a free-text prompt to the nearest one.

Matching needs no downloaded weights: first **keywords** (whole words of the prompt, singular or plural, against each
theme's keyword list; multi-word keywords match as phrases), then, when no keyword is found, a **text similarity**:
TF-IDF weighted character n-grams (3 to 5 characters, words padded with spaces) of the prompt against each theme's
name, keywords and description, compared by cosine. Character n-grams catch spelling variants and word parts
("puppies" ~ "puppy", "cupcakes" ~ "cake") that whole words miss.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

Accent = Literal["glow", "halftone", "sparkles", "none"]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Theme:
    key: str
    name: str
    description: str
    keywords: tuple[str, ...]
    palette: tuple[RGB, ...]
    """Fill colours of the cartoon; the first is the ink of the outlines. Spans dark to light, so that mapping a
    photo's colour clusters to their nearest palette colour keeps its shading."""
    accent: Accent
    accent_color: RGB
    outline_px: int
    """Width of the region outlines at 1024 px (scaled with the sticker's size); the silhouette's is 1.5 times it."""
    prompt: str
    """What an image-to-image model is asked for (when one is installed)."""

    @property
    def colours(self) -> int:
        return len(self.palette)


THEMES: tuple[Theme, ...] = (
    Theme("cute_animals", "Cute Animals", "adorable fluffy pets and wild animals with big eyes",
          ("animal", "cat", "kitten", "dog", "puppy", "pet", "bunny", "rabbit", "bear", "panda", "fox", "owl", "bird",
           "fish", "hamster", "penguin", "koala", "tiger", "lion", "elephant", "frog", "duck", "paw", "fluffy"),
          ((54, 40, 38), (122, 88, 70), (196, 150, 110), (240, 208, 170), (252, 244, 232), (248, 186, 190),
           (150, 196, 150), (140, 180, 220)),
          "glow", (255, 214, 226), 6, "cute cartoon animal sticker, big eyes, soft fur, bold outline"),
    Theme("food_drinks", "Food and Drinks", "tasty food, sweets, fruit, coffee and drinks",
          ("food", "drink", "coffee", "tea", "latte", "pizza", "burger", "sushi", "cake", "cupcake", "donut",
           "doughnut", "ice cream", "fruit", "candy", "dessert", "snack", "cookie", "bubble tea", "boba", "juice",
           "wine", "beer", "cocktail", "breakfast", "taco", "noodle", "ramen", "chocolate", "yummy", "delicious"),
          ((60, 32, 24), (150, 62, 40), (222, 92, 60), (246, 166, 62), (252, 222, 120), (255, 248, 232),
           (120, 176, 80), (200, 140, 96)),
          "sparkles", (255, 236, 150), 7, "tasty cartoon food sticker, glossy, warm colours, bold outline"),
    Theme("emoji", "Emoji Expressions", "faces and feelings: smiling, laughing, crying, love, wow",
          ("emoji", "emoticon", "smiley", "smile", "face", "laugh", "lol", "cry", "sad", "angry", "wink", "love",
           "heart eyes", "wow", "surprised", "expression", "reaction", "mood", "feeling", "meme", "happy"),
          ((40, 28, 20), (160, 80, 20), (244, 150, 30), (255, 204, 40), (255, 236, 140), (255, 255, 240),
           (230, 60, 70)),
          "none", (255, 230, 120), 9, "emoji style cartoon sticker, round, bright yellow, expressive, thick outline"),
    Theme("retro", "Retro and Vintage", "old school seventies and eighties style, faded print, halftone dots",
          ("retro", "vintage", "old school", "oldschool", "70s", "80s", "90s", "seventies", "eighties", "nostalgia",
           "nostalgic", "classic", "antique", "groovy", "vinyl", "cassette", "pin up", "diner", "faded", "halftone",
           "comic", "pop art", "synthwave", "disco"),
          ((46, 38, 36), (120, 60, 46), (200, 92, 58), (226, 160, 72), (238, 214, 160), (250, 240, 220),
           (62, 120, 120), (140, 170, 150)),
          "halftone", (46, 38, 36), 7, "retro vintage sticker, faded print, halftone dots, seventies colours"),
    Theme("mythical", "Mythical Creatures", "dragons, unicorns, fairies and magic",
          ("mythical", "myth", "dragon", "unicorn", "fairy", "mermaid", "phoenix", "griffin", "monster", "magic",
           "magical", "fantasy", "wizard", "witch", "spell", "elf", "legend", "legendary", "creature", "yeti",
           "kraken", "pegasus", "enchanted"),
          ((36, 24, 60), (84, 52, 140), (150, 100, 210), (110, 200, 220), (236, 180, 240), (250, 246, 255),
           (250, 210, 120)),
          "glow", (190, 150, 255), 7, "magical mythical creature sticker, glowing, fantasy colours, bold outline"),
    Theme("professions_hobbies", "Professions and Hobbies", "jobs, sports, music, gaming, gardening and crafts",
          ("job", "work", "profession", "doctor", "nurse", "teacher", "chef", "cook", "engineer", "developer",
           "programmer", "coder", "artist", "painter", "musician", "guitar", "music", "sport", "football", "soccer",
           "basketball", "tennis", "yoga", "gym", "fitness", "running", "gaming", "gamer", "hobby", "garden",
           "gardening", "knitting", "craft", "photography", "camera", "reading", "book", "fishing", "hiking",
           "cycling", "office", "firefighter", "pilot"),
          ((34, 40, 52), (70, 96, 130), (120, 160, 200), (230, 120, 60), (246, 200, 120), (245, 245, 240),
           (100, 160, 90), (180, 180, 186)),
          "none", (120, 160, 200), 6, "flat cartoon sticker of a hobby or profession, clean shapes, bold outline"),
    Theme("festivals_holidays", "Festivals and Holidays", "christmas, halloween, birthdays, new year, celebrations",
          ("festival", "holiday", "christmas", "xmas", "halloween", "pumpkin", "easter", "birthday", "party",
           "new year", "diwali", "eid", "hanukkah", "thanksgiving", "valentine", "valentines", "celebration",
           "celebrate", "santa", "snowman", "fireworks", "carnival", "lunar new year", "gift", "present", "confetti",
           "wedding", "anniversary"),
          ((40, 30, 30), (150, 30, 40), (220, 60, 60), (40, 120, 70), (250, 190, 60), (255, 250, 240),
           (240, 140, 40), (120, 60, 140)),
          "sparkles", (255, 210, 80), 7, "festive holiday sticker, celebration, confetti, bright colours"),
    Theme("motivational", "Motivational and Positive", "uplifting, good vibes, self care and encouragement",
          ("motivational", "motivation", "positive", "positivity", "inspire", "inspiring", "inspirational",
           "good vibes", "vibes", "you can do it", "believe", "dream", "hope", "strong", "strength", "self care",
           "selfcare", "mindful", "mindfulness", "kindness", "kind", "grateful", "gratitude", "courage", "success",
           "goals", "hustle", "cheer", "sunshine", "optimism", "encouragement", "affirmation"),
          ((40, 44, 60), (230, 90, 80), (250, 150, 60), (255, 214, 90), (140, 210, 170), (120, 180, 240),
           (255, 252, 245)),
          "glow", (255, 230, 140), 7, "positive motivational sticker, sunny warm colours, uplifting, bold outline"),
    Theme("kawaii", "Kawaii and Chibi", "japanese cute style: chibi proportions, pastel colours, blushing cheeks",
          ("kawaii", "chibi", "cute", "adorable", "pastel", "anime", "manga", "japanese", "sweet", "tiny", "baby",
           "blush", "uwu", "moe", "squishy", "plushie", "plush", "sanrio", "lovely", "soft", "pink"),
          ((70, 50, 70), (170, 120, 160), (250, 170, 200), (255, 214, 228), (200, 226, 255), (210, 244, 222),
           (255, 250, 250), (255, 236, 190)),
          "glow", (255, 190, 220), 6, "kawaii chibi sticker, pastel colours, blushing cheeks, soft outline"),
    Theme("minimalist", "Minimalist and Modern", "clean, simple, flat shapes, few colours, scandinavian, modern",
          ("minimalist", "minimal", "minimalism", "modern", "clean", "simple", "flat", "geometric", "scandinavian",
           "nordic", "monochrome", "mono", "line art", "abstract", "sleek", "elegant", "neutral", "bauhaus",
           "contemporary", "subtle"),
          ((30, 30, 34), (120, 120, 124), (210, 206, 198), (250, 248, 244)),
          "none", (210, 206, 198), 4, "minimalist modern flat sticker, few colours, clean shapes, thin outline"),
)
THEMES_BY_KEY: dict[str, Theme] = {t.key: t for t in THEMES}
DEFAULT_THEME = THEMES_BY_KEY["kawaii"]
"""Used when the prompt is empty: the look most people mean by 'a cartoon sticker'."""

NGRAM_SIZES = (3, 4, 5)
MIN_SIMILARITY = 0.08
"""Below this the prompt resembles no theme and the default is used (measured: misspelt or related prompts such as
'kittehs', 'nostalgik', 'fantasie wizzard' score 0.15-0.28 against their theme; unrelated strings 0.00-0.04)."""


@dataclass(frozen=True)
class ThemeMatch:
    theme: Theme
    how: Literal["name", "keywords", "similarity", "default"]
    reason: str
    """In words, for the result page: 'matched the keywords 'kawaii', 'chibi''."""
    score: float
    """Keywords found (keywords), the cosine similarity (similarity), 1 (name) or 0 (default)."""
    similarities: dict[str, float]
    """The text similarity to every theme (for the record)."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _singular(word: str) -> str:
    """A crude English singular (cats -> cat, puppies -> puppy, boxes -> box) so plurals hit singular keywords."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "ses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def keyword_hits(prompt: str, theme: Theme) -> list[str]:
    """The theme's keywords found in the prompt (whole words, or whole phrases for multi-word keywords)."""
    words = _words(prompt)
    normal = " " + " ".join(_singular(w) for w in words) + " "
    raw = " " + " ".join(words) + " "
    hits = []
    for keyword in theme.keywords:
        key = " ".join(_words(keyword))
        key_singular = " ".join(_singular(w) for w in _words(keyword))
        if f" {key} " in raw or f" {key_singular} " in normal:
            hits.append(keyword)
    return hits


def _ngrams(text: str) -> Counter[str]:
    grams: Counter[str] = Counter()
    for word in _words(text):
        padded = f" {word} "
        for n in NGRAM_SIZES:
            grams.update(padded[i:i + n] for i in range(max(1, len(padded) - n + 1)))
    return grams


def _theme_document(theme: Theme) -> str:
    return " ".join([theme.name, theme.description, *theme.keywords])


class _Similarity:
    """TF-IDF over character n-grams, fitted on the theme documents (built once)."""

    def __init__(self, themes: tuple[Theme, ...]) -> None:
        counts = [_ngrams(_theme_document(t)) for t in themes]
        documents = Counter(g for c in counts for g in c)
        total = len(themes)
        # Smoothed idf (as scikit-learn's default): grams in every theme still count a little.
        self.idf = {g: math.log((1 + total) / (1 + df)) + 1.0 for g, df in documents.items()}
        self.vectors = [self._vector(c) for c in counts]
        self.themes = themes

    def _vector(self, counts: Counter[str]) -> dict[str, float]:
        vector = {g: (1.0 + math.log(c)) * self.idf.get(g, 0.0) for g, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        return {g: v / norm for g, v in vector.items() if v}

    def scores(self, prompt: str) -> dict[str, float]:
        query = self._vector(_ngrams(prompt))
        return {t.key: sum(w * vector.get(g, 0.0) for g, w in query.items())
                for t, vector in zip(self.themes, self.vectors, strict=True)}


_SIMILARITY: _Similarity | None = None


def text_similarities(prompt: str) -> dict[str, float]:
    """Cosine similarity of the prompt to every theme (character n-gram TF-IDF)."""
    global _SIMILARITY
    if _SIMILARITY is None:
        _SIMILARITY = _Similarity(THEMES)
    return _SIMILARITY.scores(prompt)


def match_theme(prompt: str) -> ThemeMatch:
    """The nearest theme to a free-text prompt, and why (a theme's name or key, keywords, else text similarity)."""
    text = (prompt or "").strip()
    if not _words(text):
        return ThemeMatch(DEFAULT_THEME, "default", f"no theme was given, so the default ({DEFAULT_THEME.name})",
                          0.0, {})
    similarities = {k: round(v, 4) for k, v in text_similarities(text).items()}
    plain = " ".join(_words(text))
    for theme in THEMES:
        if plain in (" ".join(_words(theme.name)), " ".join(_words(theme.key))):
            return ThemeMatch(theme, "name", f"it is the theme's name ({theme.name})", 1.0, similarities)
    hits = {t.key: keyword_hits(text, t) for t in THEMES}
    most = max(len(h) for h in hits.values())
    if most:
        # Most keywords wins; a tie goes to the theme the whole prompt is more similar to.
        best = max((t for t in THEMES if len(hits[t.key]) == most), key=lambda t: similarities[t.key])
        quoted = ", ".join(f"'{k}'" for k in hits[best.key])
        word = "keyword" if most == 1 else "keywords"
        return ThemeMatch(best, "keywords", f"matched the {word} {quoted}", float(most), similarities)
    best = max(THEMES, key=lambda t: similarities[t.key])
    if similarities[best.key] < MIN_SIMILARITY:
        return ThemeMatch(DEFAULT_THEME, "default", f"nothing in the prompt resembles a theme (best text similarity "
                          f"{similarities[best.key]:.2f}), so the default ({DEFAULT_THEME.name})", 0.0, similarities)
    return ThemeMatch(best, "similarity", f"closest by text similarity {similarities[best.key]:.2f}",
                      similarities[best.key], similarities)
