"""Tenant ids: `[a-z0-9_-]{1,64}`, taken from where a message arrived, never from its payload."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

TENANT_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
TenantId = Annotated[str, StringConstraints(pattern=TENANT_PATTERN.pattern)]

# Pseudonymous ids sent by the clinic (client, episode, submission). Dots are allowed because FHIR
# ids allow them (`[A-Za-z0-9\-\.]{1,64}`); no NATS subject is ever built from these ids.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-:/]{1,128}$")
PseudonymousId = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
# A clinician id becomes a subject token in rapport.<tenant>.notify.<clinician>: a dot would split it
# into two tokens and `*` or `>` would be wildcards, so only letters, digits, _ and -.
SUBJECT_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
SubjectToken = Annotated[str, StringConstraints(pattern=SUBJECT_TOKEN_PATTERN.pattern)]


def is_tenant_id(value: str) -> bool:
    return bool(TENANT_PATTERN.fullmatch(value))
