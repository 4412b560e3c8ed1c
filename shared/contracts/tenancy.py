"""Tenant ids: `[a-z0-9_-]{1,64}`, taken from where a message arrived, never from its payload."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

TENANT_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
TenantId = Annotated[str, StringConstraints(pattern=TENANT_PATTERN.pattern)]

# Pseudonymous ids sent by the clinic (client, clinician, episode, submission). Dots and stars are
# refused because a clinician id becomes a subject token in rapport.<tenant>.notify.<clinician>.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-:/]{1,128}$")
PseudonymousId = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
SubjectToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]


def is_tenant_id(value: str) -> bool:
    return bool(TENANT_PATTERN.fullmatch(value))
