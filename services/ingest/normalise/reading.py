"""Small readers every inbound form shares: ids, date-times, numbers, and what a message may show.

Problem messages never echo free text from the payload (it may hold PHI). `shown` is used only for
elements FHIR types as codes or definitions (status, resourceType, linkId, Coding.code, canonical,
reference type), and even then only when the value looks like a code; ids that break the id rule
are never shown, the message names the field and the rule. JSON keys from the payload appear in a
field path only when they look like element names (`path_key`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, TypeAdapter, ValidationError

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.tenancy import ID_PATTERN, SUBJECT_TOKEN_PATTERN

SUBJECT_TOKEN = SUBJECT_TOKEN_PATTERN  # a clinician id becomes a subject token
CODE_LIKE = re.compile(r"^[A-Za-z0-9_.:/|#\-]{1,64}$")
CANONICAL_LIKE = re.compile(r"^(?:https?|urn):[A-Za-z0-9_.:/|#\-]{1,150}$")
# An id we may repeat in a rejection so clinic IT can find the message: one that keeps the id rule.
READABLE_ID = ID_PATTERN
DATE_ONLY = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
# A JSON key from the payload shown in a field path: short element-name-like keys only.
SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")
KEY_NOT_SHOWN = "<key not shown>"

# Rapport's sanity bounds on an administration time, not clinical facts: nothing Rapport scores was
# administered before 1900, and a time more than a day after Rapport received the message (more than
# any clock skew between a clinic's system and Rapport) is a mistake. Outside them a date converts
# badly (year 1 at +14:00 is before the first UTC instant Python has) or sorts after every real one.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=1)
_instant = TypeAdapter(AwareDatetime)
_naive = TypeAdapter(datetime)

ID_RULE = f"an id matching {ID_PATTERN.pattern} (letters, digits, _ - . : /; at most 128)"
TOKEN_RULE = f"an id matching {SUBJECT_TOKEN.pattern} (letters, digits, _ -; no dots, it names a subject)"


def shown(value: object) -> str:
    """A value for a message: shown when it looks like a code or a number, else a placeholder."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:g}" if abs(value) < 1e15 else "a very large number"
    if isinstance(value, str):
        return repr(value) if CODE_LIKE.fullmatch(value) else "a text value (not shown)"
    return f"a JSON {_json_kind(value)}"


def shown_canonical(value: str) -> str:
    """A canonical URL for a message: shown when it is URL-shaped (no query, no spaces, at most 160
    characters; clinic IT needs the whole URL to put it in a map), else as `shown` would."""
    return repr(value) if CANONICAL_LIKE.fullmatch(value) else shown(value)


def path_key(key: str) -> str:
    """A payload key for a field path: itself when it looks like an element name, else a placeholder."""
    return key if SAFE_KEY.fullmatch(key) else KEY_NOT_SHOWN


def _json_kind(value: object) -> str:
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else type(value).__name__


def readable_id(value: object) -> str | None:
    return value if isinstance(value, str) and READABLE_ID.fullmatch(value) else None


def check_id(value: str, field: str, *, token: bool = False) -> Problem | None:
    pattern = SUBJECT_TOKEN if token else ID_PATTERN
    if pattern.fullmatch(value):
        return None
    return Problem(field=field, code="invalid_id", message=f"{field} breaks the id rule",
                   expected=TOKEN_RULE if token else ID_RULE)


def read_instant(value: Any, field: str, now: datetime) -> datetime | Problem:
    """An ISO-8601 date and time with a UTC offset, from 1900 to a day after `now` (when the message was
    received); a date alone, a naive time or one outside those bounds is refused."""
    expected = "an ISO-8601 date and time with a UTC offset, e.g. 2026-03-02T10:15:00+00:00"
    if value is None:
        return Problem(field=field, code="missing_field", message=f"{field} is missing", expected=expected)
    if not isinstance(value, str):
        return Problem(field=field, code="invalid_datetime", message=f"{field} is not a string", expected=expected)
    if DATE_ONLY.fullmatch(value.strip()):
        return Problem(field=field, code="date_without_time",
                       message=f"{field} is a date without a time of day", expected=expected)
    try:
        instant = _instant.validate_python(value)
    except ValidationError:
        pass
    else:
        return _within_bounds(instant, field, now)
    try:
        _naive.validate_python(value)
    except ValidationError:
        return Problem(field=field, code="invalid_datetime", message=f"{field} is not an ISO-8601 date and time",
                       expected=expected)
    return Problem(field=field, code="missing_timezone", message=f"{field} has no UTC offset", expected=expected)


def _within_bounds(instant: datetime, field: str, now: datetime) -> datetime | Problem:
    latest = now + CLOCK_SKEW
    if EARLIEST <= instant <= latest:  # aware comparisons: no conversion to UTC, so no overflow
        return instant
    where = "before 1900" if instant < EARLIEST else "more than a day after Rapport received it"
    return Problem(field=field, code="out_of_range", message=f"{field} is {where}",
                   expected=f"a date and time from {_utc(EARLIEST)} to {_utc(latest)} (a day after it was received)")


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finite_number(value: Any) -> float | None:
    """A JSON number (not a boolean) that is finite, as a float; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
