"""The one exception type for mistakes a user can fix (bad config, unknown names, missing data).

The CLI prints these as a single ``error: ...`` line and exits with status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A problem in the user's input, with a message that names the culprit and what is allowed."""


def closest(name: str, allowed: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' hint for ``name`` among ``allowed`` (empty when nothing is close)."""
    if not isinstance(name, str):
        return ""
    matches = difflib.get_close_matches(name, [a for a in allowed if isinstance(a, str)], n=n,
                                        cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
