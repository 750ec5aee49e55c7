"""Text from files, made safe to show on a terminal.

A .cat's metadata, a ``runs.json`` entry or a lock file is written by whoever made the file. Shown
raw, an ESC sequence in it could clear the screen or set the terminal title, a CR or LF could
start a forged ``ccat-tf: error:`` line, and a bidi override (U+202E) could reverse what follows.
:func:`visible` shows every such character as an escape instead (``\\x1b``, ``\\n``,
``\\u202e``), so the text stays on its line and means what it looks like. Every place that prints
or quotes file-derived text goes through it.
"""

from __future__ import annotations

# Bidi formatting characters (Unicode's "explicit directional" controls and marks): ALM, LRM, RLM,
# LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI.
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# C0 controls, DEL, C1 controls, the line and paragraph separators (U+2028, U+2029: Python and
# some terminals break lines there) and the bidi controls.
_CONTROLS = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *_BIDI,
]
_TABLE = {code: _escape(code) for code in _CONTROLS}


def visible(value: object) -> str:
    """``str(value)`` with every control, line-breaking and bidi character escaped visibly."""
    return str(value).translate(_TABLE)
