"""Password rules of OWASP ASVS 5.0 §6.2: length, no composition rules, not a common password.

Passwords themselves are kept only by Identity Platform; this module only judges them.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

MIN_LENGTH = 8
MAX_LENGTH = 128  # at least 64 must be allowed (ASVS 6.2.9); Identity Platform takes more
COMMON_PASSWORDS = Path(__file__).with_name("common_passwords.txt")


@functools.cache
def _common() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines if line.strip() and not line.startswith("#"))


def problem_with(password: str) -> str | None:
    """Why the password is refused, or None. Length counts characters after NFKC, as users see them."""
    length = len(unicodedata.normalize("NFKC", password))
    if length < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if length > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if password.casefold() in _common():
        return "This password is among the most commonly used ones; choose another."
    return None
