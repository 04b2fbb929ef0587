"""Field types of request bodies, shared by every capability's models."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

import pydantic

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Ids, as paths and messages carry them: an account (a Firebase uid), and an archive (an
# export or records request: 18 random bytes, URL-safe base64).
ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ARCHIVE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
AccountId = Annotated[str, pydantic.Field(pattern=f"^{ACCOUNT_ID.pattern}$")]
ArchiveId = Annotated[str, pydantic.Field(pattern=f"^{ARCHIVE_ID.pattern}$")]


def iso_date(value: Any) -> Any:
    """Dates arrive as YYYY-MM-DD only: not the basic 20261231 form, not a timestamp."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


def in_utc_range(value: datetime) -> datetime:
    """`value`, if it converts to UTC (9999-12-31T23:00-14:00 does not)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    return value


# Request fields: a calendar date as the contract writes it, and a moment that exists in UTC.
IsoDate = Annotated[date, pydantic.BeforeValidator(iso_date)]
Moment = Annotated[pydantic.AwareDatetime, pydantic.AfterValidator(in_utc_range)]


def ascii_address(value: str) -> str:
    if not value.isascii():
        raise ValueError("must be an address in ASCII letters: internationalised addresses cannot be mailed yet")
    return value


# An email address our relay can deliver to (smtplib speaks no SMTPUTF8).
MailAddress = Annotated[pydantic.EmailStr, pydantic.AfterValidator(ascii_address)]
