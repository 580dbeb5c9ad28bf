"""The region an edit prompt is about, as a phrase to look for (pure; never raises).

    extract_target("remove the logo from the shelf")   # Target(phrase="logo", inverted=False)

"remove the logo from the shelf" -> "logo"; "change the red badge to say SALE" -> "red badge"; "make the sky a
sunset" -> "sky"; "place a lamp on the floor" -> "floor". A background phrase ("replace the background with...")
is the inverse of the salient object: the region is inverted. No match: the prompt itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    phrase: str  # what the prompt is about ("logo", "background")
    inverted: bool = False  # the region is everything except the salient object (background edits)
    matched: bool = True  # False: no verb pattern matched; `phrase` is the cleaned prompt


_REMOVE = r"remove|erase|delete|get rid of|take out|take away|clean up|hide|clear"
_CHANGE = (
    r"replace|swap|change|switch|recolou?r|fix|edit|retouch|update|transform|convert|modify|alter|restyle|"
    r"darken|brighten|blur|sharpen|enhance|redo|redraw|repaint|rewrite|translate|localise|localize"
)
_COMPLEMENT = r"make|turn|paint|colou?r|tint|dye"  # "make the sky a sunset", "turn the car red"
_PLACE = r"place|put|add|insert|hang|position|set|mount|drop|stand"
_VERB = re.compile(
    rf"\b(?:(?P<remove>{_REMOVE})|(?P<change>{_CHANGE})|(?P<complement>{_COMPLEMENT})|"
    rf"(?P<place>{_PLACE}))\b"
)
# longer phrases first: at one position the first alternative that matches wins ("on top of", not "on")
_LOCATION = re.compile(
    r"\b(?:on top of|in front of|next to|onto|on|into|inside|in|at|over|against|above|below|"
    r"under|beside|behind|across|to)\s+(?P<rest>.+)"
)  # "add a hat to the dog": dog
_DETERMINERS = {
    "the",
    "a",
    "an",
    "this",
    "that",
    "these",
    "those",
    "its",
    "their",
    "his",
    "her",
    "my",
    "our",
    "your",
    "all",
    "any",
    "some",
    "every",
    "each",
    "image",
    "photo",
    "picture",
}
_STOP = {
    "to",
    "into",
    "with",
    "for",
    "from",
    "on",
    "onto",
    "in",
    "at",
    "by",
    "under",
    "over",
    "behind",
    "near",
    "above",
    "below",
    "beside",
    "next",
    "so",
    "as",
    "and",
    "or",
    "but",
    "that",
    "which",
    "while",
    "then",
    "using",
    "like",
    "instead",
    "without",
    "is",
    "are",
    "looks",
    "look",
    "say",
    "says",
    "read",
    "reads",
    "become",
    "becomes",
    "here",
    "there",
    "a",
    "an",
    "the",
    "keep",
    "keeping",
    "leaving",
    "same",
    "please",
    "making",
    "it",
    "them",
    "everything",
    "something",
    "within",
    "inside",
    "across",
    "around",
    "against",
    "of",
    "off",
    "out",
    "away",
}
_ATTRIBUTE_OF = {
    "colour",
    "color",
    "texture",
    "pattern",
    "shade",
    "style",
    "look",
    "appearance",
    "material",
    "finish",
    "lighting",
}  # "change the colour of the car" -> "car"
_BACKGROUND = {"background", "backdrop", "backgrounds", "surroundings", "bg"}
_MAX_WORDS = 4
_FALLBACK_WORDS = 12


def _clean(prompt: str) -> str:
    text = re.sub(r"(?<=[A-Za-z])’(?=[A-Za-z])", "'", prompt)  # person’s -> person's
    text = re.sub(r"[\"“”‘’«»]([^\"“”‘’«»]*)[\"“”‘’«»]", " ", text)  # quoted replacement text
    text = re.sub(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])", " ", text)  # 'SALE', but not "shirt's"
    text = re.sub(r"[^a-z0-9\s'-]", " , ", text.lower())  # punctuation ends a phrase
    return re.sub(r"\s+", " ", text).strip()


def _noun_phrase(words: list[str]) -> list[str]:
    """Words after the verb up to the first stop word (determiners skipped in front), at most _MAX_WORDS."""
    i = 0
    while i < len(words) and words[i] in _DETERMINERS:
        i += 1
    out: list[str] = []
    while i < len(words) and words[i] != "," and words[i] not in _STOP:
        out.append(words[i])
        i += 1
    if out and out[-1] in _ATTRIBUTE_OF and i + 1 < len(words) and words[i] == "of":
        return _noun_phrase(words[i + 1 :])
    if len(out) > 1 and out[-1] in _ATTRIBUTE_OF:  # "change the shirt colour to red" -> "shirt"
        out = out[:-1]
    return out[:_MAX_WORDS]


def _region(phrase: list[str]) -> Target | None:
    if not phrase:
        return None
    if any(w in _BACKGROUND for w in phrase):
        return Target("background", inverted=True)
    return Target(" ".join(phrase))


def extract_target(prompt: str) -> Target:
    """The region an edit prompt is about (see the module docstring). Pure; never raises."""
    text = _clean(prompt)
    for verb in _VERB.finditer(text):
        rest = text[verb.end() :].split()
        kind = verb.lastgroup
        if kind == "place":
            where = _LOCATION.search(text, verb.end())
            found = _region(_noun_phrase(where.group("rest").split())) if where else None
        else:
            phrase = _noun_phrase(rest)
            ran_to_end = len(phrase) == len([w for w in rest if w not in _DETERMINERS])
            if kind == "complement" and len(phrase) > 1 and ran_to_end:
                phrase = phrase[:-1]  # "turn the car red": the last word is what it becomes
            found = _region(phrase)
        if found is not None:
            return found
    words = [w for w in text.split() if w != ","][:_FALLBACK_WORDS]
    fallback = _region(words) if any(w in _BACKGROUND for w in words) else None
    return fallback or Target(" ".join(words) or prompt.strip()[:80], matched=False)
