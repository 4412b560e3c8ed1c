"""`rapport deadletter list|show|redrive` as an operator runs it, against the real NATS JetStream: a
forged event is listed with its reason (never its body); a message dead-lettered by a defect is
redriven once the defect is fixed and handled exactly once, however often the redrive is run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime

import nats
import pytest
from harness import running, settings_for
from sqlalchemy import text

from rapport.services.ingest.models import inbox, outbox
from rapport.shared.db.delivery import Outgoing
from rapport.shared.messaging import subjects
from rapport.shared.messaging.consumer import Inbound
from rapport.shared.messaging.publish import cloud_event
from rapport.shared.service import ServiceRuntime
from rapport.shared.unit_of_work import SessionUnitOfWork

pytestmark = pytest.mark.nats


def rapport(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAPPORT_BROKER_URL": url}
    return subprocess.run([sys.executable, "-m", "rapport.cli", "deadletter", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


async def dead_letter_count(url: str) -> int:
    connection = await nats.connect(url)
    try:
        return int((await connection.jetstream().stream_info(subjects.DEADLETTER_STREAM)).state.messages)
    finally:
        await connection.close()


async def test_a_forged_score_for_another_tenant_is_listed_with_its_reason_and_never_its_body(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    from rapport.shared.contracts.score import ScoreComputed, Scored

    victim = tenant + "-victim"
    scored = Scored(instrument="phq9", instrument_version="1", kind="outcome", better="lower", total=27,
                    total_min=0, total_max=27, risk_checked=True)
    forged = ScoreComputed(tenant=victim, submission_id="SYNTHETIC-PHI-MARKER", revision=1, client_id="c-1",
                           episode_id="e-1", administered_at=datetime.fromisoformat("2026-03-02T10:00:00+00:00"),
                           score=scored, responses={n: 3.0 for n in range(1, 10)})
    event = cloud_event(entity="score", verb="computed", service="scoring", tenant=victim,
                        subject=subjects.outbound(tenant, "score", "computed"), about=None, data=forged)
    async with running(["alerts"], settings_for(database_url), fresh_stream):
        connection = await nats.connect(fresh_stream)
        try:
            letters = await connection.subscribe(subjects.dead_letter(tenant, "alerts"))
            await connection.jetstream().publish(event.subject, event.body, headers={"Nats-Msg-Id": "forged-1"})
            letter = await letters.next_msg(timeout=20)
        finally:
            await connection.close()
    assert letter.headers is not None
    assert letter.headers["Rapport-Error"] == \
        "poison: tenant_mismatch: the event names another tenant than the subject it arrived on"
    listed = rapport(fresh_stream, "list", "--tenant", tenant, "--reason", "poison")
    assert listed.returncode == 0, listed.stderr
    assert "tenant_mismatch" in listed.stdout and "alerts" in listed.stdout and "1 dead letter(s)" in listed.stdout
    assert "SYNTHETIC-PHI-MARKER" not in listed.stdout + listed.stderr
    [record] = json.loads(rapport(fresh_stream, "list", "--tenant", tenant, "--json").stdout)
    assert (record["service"], record["original_subject"], record["deliveries"]) == (
        "alerts", event.subject, 1)
    shown = rapport(fresh_stream, "show", str(record["sequence"]))
    assert shown.returncode == 0 and "SYNTHETIC-PHI-MARKER" not in shown.stdout
    assert rapport(fresh_stream, "list", "--tenant", tenant, "--reason", "defect").stdout.strip() == \
        "no dead letters match"


class FailsUntilFixed:
    """A work function with a defect (it raises KeyError) until `fixed` is set."""

    def __init__(self) -> None:
        self.fixed = False
        self.handled: list[str] = []

    async def __call__(self, uow: SessionUnitOfWork, messages: Sequence[Inbound]) -> None:
        if not self.fixed:
            raise KeyError("a bug")
        await uow.session.execute(text("SELECT 1"))
        self.handled += [m.message_id for m in messages]
        uow.publish(Outgoing(m.event_id("echo"), subjects.outbound(m.tenant, "submission", "echoed"), m.body)
                    for m in messages)


async def test_a_message_dead_lettered_by_a_defect_is_redriven_after_the_fix_and_handled_once(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    work = FailsUntilFixed()
    settings = settings_for(database_url, max_deliver=2, retry_backoff_seconds=[0.05])
    runtime = ServiceRuntime("ingest", settings, fresh_stream, inbox=inbox, outbox=outbox)
    runtime.subscribe(subjects.INBOUND_SUBMISSIONS, "fix-v1", work, unit_of_work=SessionUnitOfWork, description="test")
    await runtime.start()
    connection = await nats.connect(fresh_stream)
    try:
        letters = await connection.subscribe(subjects.dead_letter(tenant, "ingest"))
        echoed = await connection.subscribe(subjects.outbound(tenant, "submission", "echoed"))
        await connection.jetstream().publish(subjects.submissions_in(tenant), b'{"n": 1}',
                                             headers={"Nats-Msg-Id": "order-7"})
        await letters.next_msg(timeout=20)
        [record] = json.loads(rapport(fresh_stream, "list", "--tenant", tenant, "--json").stdout)
        assert record["reason"] == "defect: KeyError after 2 deliveries"

        work.fixed = True  # the fix is deployed
        redriven = rapport(fresh_stream, "redrive", str(record["sequence"]))
        assert redriven.returncode == 0, redriven.stdout + redriven.stderr
        assert "1 of 1 redriven" in redriven.stdout
        event = await echoed.next_msg(timeout=20)
        assert event.data == b'{"n": 1}'
        assert work.handled == ["order-7"], "handled under its original message id"

        again = rapport(fresh_stream, "redrive", str(record["sequence"]))
        assert again.returncode == 1 and "0 of 1 redriven" in again.stdout
        assert rapport(fresh_stream, "list", "--tenant", tenant).stdout.strip() == "no dead letters match"
        assert await dead_letter_count(fresh_stream) == 0
        # the event was stored once: the outbox may publish it again under load (a retried publish, the
        # same Nats-Msg-Id, which a plain subscription sees twice), and the stream keeps one
        echo_subject = subjects.outbound(tenant, "submission", "echoed")
        stored = await connection.jetstream().stream_info(subjects.EVENT_STREAM, subjects_filter=echo_subject)
        assert stored.state.subjects == {echo_subject: 1}
    finally:
        await connection.close()
        await runtime.stop()
    assert work.handled == ["order-7"]


async def test_redrive_needs_sequences_or_all(fresh_stream: str) -> None:
    result = rapport(fresh_stream, "redrive")
    assert result.returncode == 2 and "give dead-letter sequence numbers, or --all" in result.stderr
