"""Model-pattern globs (`*`, `?`, `[..]`, `[!..]`, `{a,b}`) compiled to regular expressions.

Compiled once per snapshot; the literal prefix length is the precedence tie-breaker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_META = frozenset("*?[{")


@dataclass(frozen=True, slots=True)
class Glob:
    pattern: str
    regex: re.Pattern[str]
    literal_prefix: int

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        body, _ = _translate(pattern, 0, in_braces=False)
        return cls(pattern, re.compile(f"(?s:{body})\\Z"), literal_prefix_length(pattern))

    def matches(self, model: str) -> bool:
        return self.regex.match(model) is not None


def literal_prefix_length(pattern: str) -> int:
    """Characters before the first wildcard."""
    for index, char in enumerate(pattern):
        if char in _META:
            return index
    return len(pattern)


def _translate(pattern: str, start: int, *, in_braces: bool) -> tuple[str, int]:
    """Translate from `start` up to the end (or the closing brace); return (regex, next index)."""
    out: list[str] = []
    i = start
    while i < len(pattern):
        char = pattern[i]
        if in_braces and char in ",}":
            return "".join(out), i
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
            continue
        elif char == "{":
            text, i = _alternation(pattern, i)
            out.append(text)
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out), i


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    end = pattern.find(
        "]", start + 2 if pattern[start + 1 : start + 2] in ("!", "]") else start + 1
    )
    if end < 0:
        return re.escape("["), start + 1
    inner = pattern[start + 1 : end]
    if inner.startswith("!"):
        inner = "^" + inner[1:]
    inner = inner.replace("\\", "\\\\")
    return f"[{inner}]", end + 1


def _alternation(pattern: str, start: int) -> tuple[str, int]:
    options: list[str] = []
    i = start + 1
    while i < len(pattern):
        text, i = _translate(pattern, i, in_braces=True)
        options.append(text)
        if i >= len(pattern):
            break
        if pattern[i] == "}":
            return "(?:" + "|".join(options) + ")", i + 1
        i += 1
    return re.escape("{"), start + 1
