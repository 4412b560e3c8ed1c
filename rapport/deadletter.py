"""`rapport deadletter list|show|redrive`: what landed in the dead-letter stream, why, and sending it again.

Output names ids, subjects and reasons (codes and fields), never a message's body; `show --save`
writes a body to a file readable by its owner only, for the engineer who has to look inside."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rapport.shared.messaging.broker import connect_client
from rapport.shared.messaging.deadletters import DeadLetterRecord, Filters, get_dead_letter, list_dead_letters, redrive
from rapport.shared.settings import Settings

AGO = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(value: str | None, now: datetime) -> datetime | None:
    """An ISO-8601 time with offset, or a span back from now: 30m, 2h, 7d."""
    if value is None:
        return None
    if match := AGO.fullmatch(value.strip()):
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset; write e.g. 2026-12-01T09:00:00+00:00 or 2h")
    return when


def line(record: DeadLetterRecord) -> str:
    return (f"{record.sequence:>8}  {record.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {record.tenant:<20} "
            f"{record.service:<8} {record.deliveries:>3}  {record.reason}")


HEADER = f"{'seq':>8}  {'dead-lettered (UTC)':<19}  {'tenant':<20} {'service':<8} {'tries':>3}  reason"


async def list_command(url: str, settings: Settings, filters: Filters, limit: int, as_json: bool) -> str:
    connection = await connect_client(settings, url, name="rapport-deadletter")
    try:
        records = await list_dead_letters(connection.jetstream(), filters, limit)
    finally:
        await connection.close()
    if as_json:
        return json.dumps([asdict(r) for r in records], default=str, indent=2)
    if not records:
        return "no dead letters match"
    return "\n".join([HEADER, *map(line, records), f"{len(records)} dead letter(s)"])


async def show_command(url: str, settings: Settings, sequence: int, save: Path | None) -> tuple[int, str]:
    connection = await connect_client(settings, url, name="rapport-deadletter")
    try:
        found = await get_dead_letter(connection.jetstream(), sequence)
    finally:
        await connection.close()
    if found is None:
        return 1, f"no dead letter {sequence}"
    record, body = found
    lines = [f"{k:<20} {v}" for k, v in asdict(record).items()]
    if save is not None:
        descriptor = os.open(save, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(body)
        lines.append(f"{'body saved to':<20} {save} ({len(body)} bytes, mode 0600)")
    return 0, "\n".join(lines)


async def redrive_command(url: str, settings: Settings, sequences: list[int],
                          filters: Filters | None) -> tuple[int, str]:
    connection = await connect_client(settings, url, name="rapport-deadletter")
    try:
        js = connection.jetstream()
        if filters is not None:
            sequences = [r.sequence for r in await list_dead_letters(js, filters, limit=100_000)]
        done = await redrive(js, sequences)
    finally:
        await connection.close()
    lines = [f"redriven {d.sequence} -> {d.subject} (stream sequence {d.stream_sequence})" for d in done]
    kept = sorted(set(sequences) - {d.sequence for d in done})
    if kept:
        lines.append(f"not redriven (no such dead letter, or its subject names no tenant): {kept}")
    lines.append(f"{len(done)} of {len(sequences)} redriven")
    return (0 if not kept else 1), "\n".join(lines)
