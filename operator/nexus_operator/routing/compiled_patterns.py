"""Model-pattern globs compiled once per snapshot; the translation itself is api.globs.

Compiling never raises: a pattern with a reversed range (which validation rejects, but an
object stored before that rule, or built without validation, may carry) matches nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nexus_operator.api.globs import GlobError, literal_prefix_length, translate

_NOTHING = re.compile("(?!)")


@dataclass(frozen=True, slots=True)
class Glob:
    pattern: str
    regex: re.Pattern[str]
    literal_prefix: int

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        try:
            regex = re.compile(translate(pattern))
        except GlobError:
            regex = _NOTHING
        return cls(pattern, regex, literal_prefix_length(pattern))

    def matches(self, model: str) -> bool:
        return self.regex.match(model) is not None
