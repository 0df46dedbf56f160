"""Model-pattern globs (`*`, `?`, `[..]`, `[!..]`, `{a,b}`) translated to regular expressions.

The translation lives in api so validation and routing share it: a pattern the API admits is
a pattern routing compiles. Classes follow fnmatch: `!` first negates, a `]` right after the
opening (or after `!`) is a member, a `[` without a closing `]` is a literal `[`. A `{` without
its closing `}` is an error (GlobError), not a literal: it is always a typo.
"""

from __future__ import annotations

import re
import string

# What a pattern may hold: model-id characters and the glob syntax.
GLOB_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._:/@-" + "*?[]{},!")
# A character class as fnmatch reads it; the CRD's CEL rule walks classes with it too.
_CLASS_PATTERN = r"\[(?:!.|[^!])[^\]]*\]"


def _reversed_range_pattern() -> str:
    """A regex finding a class whose members include a reversed range, for the CRD's CEL rule.

    CEL cannot loop over a class's members within the API server's cost budget, so this walks
    the pattern as `translate` does: text and whole classes, then a class whose members read
    left to right (`x-y` when a `-` and a character follow `x`, else `x`) reach a range
    `x-y` with `y` below `x`. `]` is a member only first; `!` first negates instead.
    """
    body, not_dash = r"[^\]]", r"[^\]\-]"
    below = "|".join(
        rf"\x{ord(c):02x}-{_below(c)}" for c in sorted(GLOB_CHARACTERS) if c not in "!-]"
    )
    # Members up to a range end: a single member is never followed by `-` (that reads a range).
    more_ranges = rf"(?:{body}-{body}|{body}{not_dash}*{not_dash}-{body})*"

    def members(first: str, *, dash_next: bool) -> str:
        """Whole members from the class's first character; a `-` may start the next one only
        when they end in a range (or are none)."""
        to_range = rf"(?:{first}-{body}|{first}{not_dash}*{not_dash}-{body}){more_ranges}"
        if dash_next:
            return f"(?:{to_range})?"
        return rf"(?:{to_range}(?:{body}{not_dash}*)?|{first}{not_dash}*)?"

    def opening(*, dash_next: bool) -> str:
        negated, plain = (members(first, dash_next=dash_next) for first in (".", "[^!]"))
        return rf"\[(?:!{negated}|{plain})"

    bad = (
        rf"(?:{opening(dash_next=False)}(?:{below})"
        rf"|{opening(dash_next=True)}--{_below('-')}"
        rf"|\[!?\]-{_below(']')})"
    )
    return rf"(?s)^(?:[^\[]|{_CLASS_PATTERN})*{bad}{body}*\]"


def _below(char: str) -> str:
    """A class of the characters below `char`, `]` excepted (it would close the class)."""
    top = ord(char) - 1
    if top < ord("]"):
        return rf"[\x00-\x{top:02x}]"
    return rf"[\x00-\x5c\x5e-\x{top:02x}]"


REVERSED_RANGE_PATTERN = _reversed_range_pattern()

_CLASS = re.compile(_CLASS_PATTERN, re.DOTALL)
# One member of a class body: a range `x-y` or a single character.
_MEMBER = re.compile(r".-.|.", re.DOTALL)
_META = frozenset("*?[{")


class GlobError(ValueError):
    """A pattern no model can match: a class holds a reversed range such as `z-a`, or a `{`
    alternation is never closed."""


def translate(pattern: str) -> str:
    """The regular expression (source) matching whole model ids; raises GlobError."""
    body, _ = _translate(pattern, 0, in_braces=False)
    return f"(?s:{body})\\Z"


def literal_prefix_length(pattern: str) -> int:
    """Characters before the first wildcard: the precedence tie-breaker."""
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
    """A class rebuilt from escaped members, so `re` never sees glob syntax it reads otherwise."""
    match = _CLASS.match(pattern, start)
    if match is None:
        return re.escape("["), start + 1
    text = match.group()
    negated = text.startswith("[!")
    body = text[2:-1] if negated else text[1:-1]
    members = "".join(_member(token) for token in _MEMBER.findall(body))
    return ("[^" if negated else "[") + members + "]", match.end()


def _member(token: str) -> str:
    if len(token) == 1:
        return re.escape(token)
    low, high = token[0], token[2]
    if low > high:
        raise GlobError(f"character class range '{token}' is reversed")
    return f"{re.escape(low)}-{re.escape(high)}"


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
    raise GlobError(f"'{{' at position {start} is never closed by '}}'")
