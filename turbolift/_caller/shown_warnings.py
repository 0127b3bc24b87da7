"""The warnings this process has shown, so that a worker's import repeating the program's shows none again.

A worker imports the program's modules again (:mod:`turbolift._worker.repeated_imports`) and
sends the warnings those imports raise marked as such; the caller shows one unless it has
shown a warning of the same category and message itself. It learns what it shows from
``warnings._showwarnmsg``, which every shown warning reaches, under
``catch_warnings(record=True)`` and pytest's capture too. Kept light: the client installs it
when it is made, before the program's own imports where distribution is switched on at start.
"""
from __future__ import annotations

import warnings

_shown: set[tuple[str, str]] = set()   # ("module.QualName" of the category, message)
_MAX_SHOWN = 10_000
_show = warnings._showwarnmsg   # type: ignore[attr-defined]


def _remembering(message: warnings.WarningMessage) -> None:
    if len(_shown) < _MAX_SHOWN:
        category = message.category
        _shown.add((f"{category.__module__}.{category.__qualname__}", str(message.message)))
    _show(message)


def remember() -> None:
    """From now on, remember the warnings this process shows (idempotent)."""
    if warnings._showwarnmsg is not _remembering:   # type: ignore[attr-defined]
        warnings._showwarnmsg = _remembering   # type: ignore[attr-defined]


def shown(category_name: str, message: str) -> bool:
    """Whether a warning of category ``category_name`` ("module.QualName") and ``message`` was shown."""
    return (category_name, message) in _shown
