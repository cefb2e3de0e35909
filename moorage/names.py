"""Names people give things (accounts, credentials, API tokens, regions): one spelling, no
hidden characters.

A name is shown to other people and picked from lists, so it must look like what it is.
Text that renders differently from how it compares would let one thing pass for another:
U+202E turns the rest of a line around ("gpj.exe" shows as "exe.jpg"), U+200B is invisible,
U+2028 and U+0085 break lines in logs and tables. Such characters are refused, with the code
``<field>_invalid`` and the character named. Names are NFC-normalised first, so "é" typed as
one code point or as "e" + a combining accent is one name (and one uniqueness key).
"""

from __future__ import annotations

import unicodedata

from moorage.errors import ValidationFailed

__all__ = ["FORBIDDEN_CATEGORIES", "clean_name"]

#: Unicode general categories refused in names: controls (Cc: tabs, newlines, U+0085),
#: format characters (Cf: zero-width and bidi controls such as U+200B, U+200E, U+202E,
#: U+2066, U+FEFF), line and paragraph separators (Zl, Zp), surrogates, private use and
#: unassigned code points (Cs, Co, Cn).
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def clean_name(value: str, *, max_length: int, field: str = "name", label: str = "name") -> str:
    """``value`` NFC-normalised and stripped, or :class:`ValidationFailed`.

    Codes: ``<field>_required``, ``<field>_too_long`` (counted in characters after
    normalisation), ``<field>_invalid`` (a refused character, named in the message).
    """
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        raise _fail(field, f"{field}_required", f"The {label} must not be empty.")
    if len(name) > max_length:
        raise _fail(field, f"{field}_too_long",
                    f"The {label} is longer than {max_length} characters.")
    for char in name:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            raise _fail(
                field, f"{field}_invalid",
                f"The {label} cannot contain control, invisible or text-direction characters "
                f"(it holds U+{ord(char):04X}). Type it as one line of visible text.",
            )
    return name


def _fail(field: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, detail={"fields": {field: message}})
