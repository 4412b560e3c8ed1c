"""`rapport broker check|init`: the streams Rapport needs, on the configured broker, as an operator sees them.

`check` reads each stream and says whether it has what Rapport needs to be correct (the rules the
services apply on start, shared/messaging/streams.py) and what the operator may want to know
(replicas fewer than RAPPORT_STREAM_REPLICAS, memory storage, a duplicate window that weakens
deduplication or, on the inbound stream, lets one tenant's message id hide another's), and lists
the durable consumers with what they have waiting. It exits 1 when anything is off.

`init` does what the services do on start (create the streams that are missing, narrow the pre-0.2
`rapport.>` stream) and, being run by an operator on purpose, also what they never do to a stream
that exists: add the subjects it lacks (an upgrade that adds an event kind, such as
`rapport.*.attendance.>`) and raise its replicas to RAPPORT_STREAM_REPLICAS. Everything else the
operator set is kept. What it cannot change in place (a stream's retention policy) it reports, and
exits 1. It lets services run with broker permissions that do not allow creating or editing streams.
Consumers are the services' own: each creates its durable consumer on start, with its own settings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from rapport.shared.messaging.broker import connect_client, without_credentials
from rapport.shared.messaging.streams import LEGACY_SUBJECTS, differences, stream_configs
from rapport.shared.messaging.subjects import EVENT_STREAM, INBOUND_STREAM
from rapport.shared.settings import Settings

DAY = 24 * 3600


@dataclass
class StreamReport:
    name: str
    wanted: StreamConfig
    found: StreamConfig | None = None
    leader: str | None = None
    problems: list[str] = field(default_factory=list)  # what makes Rapport refuse it or lose guarantees
    consumers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.found is not None and not self.problems


def judge(wanted: StreamConfig, found: StreamConfig, settings: Settings) -> list[str]:
    """Everything about a stream that is not what Rapport expects, worded for an operator."""
    problems = differences(wanted, found)
    if list(found.subjects or []) == LEGACY_SUBJECTS:
        problems.append("it is the pre-0.2 `rapport.>` stream (the services narrow it on start; so does init)")
    if (found.num_replicas or 1) < settings.stream_replicas:
        problems.append(f"{found.num_replicas or 1} replica(s), RAPPORT_STREAM_REPLICAS asks for "
                        f"{settings.stream_replicas}")
    if found.storage == StorageType.MEMORY:
        problems.append("memory storage: a broker restart loses every message in it (Rapport creates it on file)")
    window, expected = found.duplicate_window or 0.0, wanted.duplicate_window or 0.0
    if wanted.name == INBOUND_STREAM and window > expected + 1e-9:
        problems.append(f"duplicate window {_seconds(window)} is longer than Rapport's {_seconds(expected)}: "
                        "the window is shared by every tenant, so one tenant's message id can make another's vanish")
    elif wanted.name != INBOUND_STREAM and window + 1e-9 < expected:
        problems.append(f"duplicate window {_seconds(window)} is shorter than Rapport's {_seconds(expected)}: "
                        "a republished event may be stored twice")
    return problems


async def inspect_streams(js: JetStreamContext, settings: Settings) -> list[StreamReport]:
    reports = []
    for wanted in stream_configs(settings):
        assert wanted.name is not None
        report = StreamReport(wanted.name, wanted)
        try:
            info = await js.stream_info(wanted.name)
        except NotFoundError:
            report.problems.append("missing (the services create it on start, or run `rapport broker init`)")
            reports.append(report)
            continue
        report.found = info.config
        report.leader = info.cluster.leader if info.cluster is not None else None
        if info.cluster is not None and not info.cluster.leader:
            report.problems.append("no leader: nothing can be stored or delivered (a cluster without quorum?)")
        report.problems += judge(wanted, info.config, settings)
        with contextlib.suppress(Exception):  # listing consumers is information, not a check
            for consumer in await js.consumers_info(wanted.name):
                report.consumers.append(f"{consumer.name}: {consumer.num_pending or 0} pending, "
                                        f"{consumer.num_ack_pending or 0} unacknowledged")
        reports.append(report)
    return reports


async def init_streams(js: JetStreamContext, settings: Settings) -> tuple[list[str], list[str]]:
    """Create what is missing, add missing subjects, raise replicas: what was done, and what the
    broker refused (e.g. 3 replicas on a single server), line by line."""
    done, refused = [], []
    for wanted in stream_configs(settings):
        assert wanted.name is not None
        try:
            found = (await js.stream_info(wanted.name)).config
        except NotFoundError:
            try:
                await js.add_stream(wanted)
            except APIError as error:
                refused.append(f"could not create {wanted.name}: {error.description or error}")
                continue
            done.append(f"created {wanted.name}: subjects {', '.join(wanted.subjects or [])}, "
                        f"{wanted.num_replicas} replica(s), file storage")
            continue
        changed, changes = found, []
        if wanted.name == EVENT_STREAM and list(found.subjects or []) == LEGACY_SUBJECTS:
            changed = replace(changed, subjects=list(wanted.subjects or []))
            changes.append(f"narrowed {wanted.name} from rapport.> to the event subjects")
        missing = [s for s in wanted.subjects or [] if s not in (changed.subjects or [])]
        if missing:
            changed = replace(changed, subjects=[*(changed.subjects or []), *missing])
            changes.append(f"added to {wanted.name} the subjects {', '.join(missing)}")
        if (found.num_replicas or 1) < settings.stream_replicas:
            changed = replace(changed, num_replicas=settings.stream_replicas)
            changes.append(f"raised {wanted.name} from {found.num_replicas or 1} to {settings.stream_replicas} "
                           "replicas")
        if not changes:
            continue
        try:
            await js.update_stream(changed)
        except APIError as error:
            refused.append(f"could not update {wanted.name} ({'; '.join(changes)}): {error.description or error}")
            continue
        done += changes
    return done, refused


def describe(report: StreamReport) -> list[str]:
    config = report.found or report.wanted
    state = "ok" if report.ok else ("MISSING" if report.found is None else "OFF")
    lines = [f"{report.name:<12} {state}"]
    if report.found is not None:
        retention, storage = _value(config.retention), _value(config.storage)
        lines.append(f"  subjects     {', '.join(config.subjects or [])}")
        lines.append(f"  replicas {config.num_replicas or 1}  storage {storage}  retention {retention}  "
                     f"max age {_days(config.max_age)}  duplicate window {_seconds(config.duplicate_window or 0)}"
                     + (f"  leader {report.leader}" if report.leader and (config.num_replicas or 1) > 1 else ""))
    else:
        lines.append(f"  Rapport would create it with subjects {', '.join(config.subjects or [])}")
    lines += [f"  - {problem}" for problem in report.problems]
    lines += [f"  consumer {consumer}" for consumer in report.consumers]
    return lines


async def check_command(settings: Settings, url: str) -> tuple[int, str]:
    client = await connect_client(settings, url, name="rapport-broker-check")
    try:
        reports = await inspect_streams(client.jetstream(timeout=10), settings)
    finally:
        await client.close()
    lines = [f"broker {without_credentials(url)}"]
    for report in reports:
        lines += describe(report)
    off = [r.name for r in reports if not r.ok]
    lines.append(f"not as Rapport expects: {', '.join(off)} (rapport broker init fixes subjects, replicas and "
                 "missing streams)" if off else "every stream is as Rapport expects")
    return (1 if off else 0), "\n".join(lines)


async def init_command(settings: Settings, url: str) -> tuple[int, str]:
    client = await connect_client(settings, url, name="rapport-broker-init")
    try:
        js = client.jetstream(timeout=10)
        done, refused = await init_streams(js, settings)
        reports = await inspect_streams(js, settings)
    finally:
        await client.close()
    lines = [f"broker {without_credentials(url)}", *(done or ["nothing to change"]), *refused]
    off = [r for r in reports if not r.ok]
    for report in off:
        lines += describe(report)
    if off:
        lines.append("left as it is (init does not change retention, storage or limits an operator set): "
                     + ", ".join(r.name for r in off))
    return (1 if off or refused else 0), "\n".join(lines)


def _value(setting: object) -> str:
    """An enum of nats-py's as the server names it (a stream read back may carry the plain string)."""
    return str(getattr(setting, "value", setting)) if setting is not None else "?"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _days(max_age: float | None) -> str:
    if not max_age:
        return "unlimited"
    return f"{max_age / DAY:g}d"
