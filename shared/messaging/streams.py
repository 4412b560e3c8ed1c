"""The three streams (see subjects.py): created when missing, checked when present, never overwritten.

A service declares what it needs on start. A stream that exists is kept as it is (an operator may
have raised its replicas or changed its limits) unless it lacks what Rapport needs to be correct:
its subjects and its retention policy. Then the service refuses to start and says what differs.
The one exception is the single `rapport.>` stream of Rapport before 0.2, which is narrowed to the
event subjects so the inbound and dead-letter streams can exist beside it (drain inbound
submissions before upgrading: the old stream's unconsumed `in.` messages are not moved).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from rapport.shared.messaging.subjects import (
    DEADLETTER_STREAM,
    EVENT_STREAM,
    INBOUND_STREAM,
    PREFIX,
    STREAM_SUBJECTS,
)
from rapport.shared.settings import Settings

log = logging.getLogger("rapport.streams")

DAY = 24 * 3600
# Our own events are published with derived ids; a republish by the outbox relay after a crash is
# recognised within this window (and by the consumers' inboxes after it).
EVENT_DUPLICATE_WINDOW_SECONDS = 300
# Clinic systems choose their own Nats-Msg-Id. A stream's duplicate window is shared by everyone
# who publishes to it, so a long one would let one tenant's id make another tenant's message vanish.
# The server's minimum is 100 ms; deduplication of inbound messages is the ingest inbox's work,
# which is keyed by tenant and message id and kept for weeks.
INBOUND_DUPLICATE_WINDOW_SECONDS = 0.1
LEGACY_SUBJECTS = [f"{PREFIX}.>"]


class StreamMismatch(RuntimeError):
    """A stream exists without what Rapport needs; the message says what differs and how to fix it."""


def stream_configs(settings: Settings) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=INBOUND_STREAM, subjects=STREAM_SUBJECTS[INBOUND_STREAM], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, max_age=settings.inbound_retention_days * DAY,
            duplicate_window=INBOUND_DUPLICATE_WINDOW_SECONDS, num_replicas=settings.stream_replicas,
        ),
        StreamConfig(
            name=EVENT_STREAM, subjects=STREAM_SUBJECTS[EVENT_STREAM], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, max_age=settings.event_retention_days * DAY,
            duplicate_window=EVENT_DUPLICATE_WINDOW_SECONDS, num_replicas=settings.stream_replicas,
        ),
        StreamConfig(
            name=DEADLETTER_STREAM, subjects=STREAM_SUBJECTS[DEADLETTER_STREAM], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, max_age=settings.deadletter_retention_days * DAY,
            duplicate_window=EVENT_DUPLICATE_WINDOW_SECONDS, allow_direct=True,
            num_replicas=settings.stream_replicas,
        ),
    ]


def differences(wanted: StreamConfig, found: StreamConfig) -> list[str]:
    """What a stream lacks that Rapport needs (its subjects and retention); other settings are the operator's."""
    problems = []
    missing = sorted(set(wanted.subjects or []) - set(found.subjects or []))
    if missing:
        problems.append(f"subjects {missing} are not captured (it has {sorted(found.subjects or [])})")
    if found.retention != wanted.retention:
        problems.append(f"retention is {_name(found.retention)}, Rapport needs {_name(wanted.retention)}")
    return problems


def _name(policy: RetentionPolicy | None) -> str:
    return policy.value if policy is not None else "unset"


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the streams that are missing; check the others. Raises StreamMismatch."""
    wanted = stream_configs(settings)
    await _narrow_legacy_stream(js)
    for config in wanted:
        assert config.name is not None
        try:
            found = (await js.stream_info(config.name)).config
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", config.name, extra={"stream": config.name})
            continue
        if (found.num_replicas or 1) < settings.stream_replicas:
            log.warning("stream %s has %d replica(s), RAPPORT_STREAM_REPLICAS asks for %d: kept as it is "
                        "(nats stream edit %s --replicas %d)", config.name, found.num_replicas or 1,
                        settings.stream_replicas, config.name, settings.stream_replicas, extra={"stream": config.name})
        if problems := differences(config, found):
            raise StreamMismatch(
                f"stream {config.name} exists but {'; '.join(problems)}. Rapport does not change a stream "
                f"an operator set up: fix it (nats stream edit {config.name}) or delete it to let Rapport create it."
            )


async def _narrow_legacy_stream(js: JetStreamContext) -> None:
    try:
        found = (await js.stream_info(EVENT_STREAM)).config
    except NotFoundError:
        return
    if list(found.subjects or []) == LEGACY_SUBJECTS:
        await js.update_stream(replace(found, subjects=STREAM_SUBJECTS[EVENT_STREAM]))
        log.warning("narrowed the pre-0.2 stream %s from rapport.> to the event subjects", EVENT_STREAM,
                    extra={"stream": EVENT_STREAM})
