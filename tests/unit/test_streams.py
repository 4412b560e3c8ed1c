"""What Rapport asks of its streams, and what it refuses to overwrite."""

from __future__ import annotations

from dataclasses import replace

from nats.js.api import RetentionPolicy

from rapport.shared.messaging.streams import differences, stream_configs
from rapport.shared.messaging.subjects import DEADLETTER_STREAM, EVENT_STREAM, INBOUND_STREAM, stream_of
from rapport.shared.settings import Settings


def test_streams_are_created_with_the_configured_replicas_and_retention() -> None:
    configs = {c.name: c for c in stream_configs(Settings(stream_replicas=3, inbound_retention_days=2))}
    assert {c.num_replicas for c in configs.values()} == {3}
    assert configs[INBOUND_STREAM].retention == RetentionPolicy.WORK_QUEUE
    assert configs[INBOUND_STREAM].max_age == 2 * 24 * 3600
    assert configs[INBOUND_STREAM].duplicate_window == 0.1, "the server's minimum: clients' ids are shared"


def test_an_operator_may_change_limits_but_not_what_rapport_needs() -> None:
    wanted = stream_configs(Settings())[0]
    assert differences(wanted, replace(wanted, num_replicas=3, max_age=60.0)) == []
    [problem] = differences(wanted, replace(wanted, retention=RetentionPolicy.LIMITS))
    assert problem == "retention is limits, Rapport needs workqueue"
    [problem] = differences(wanted, replace(wanted, subjects=["rapport.acme.in.>"]))
    assert problem.startswith("subjects ['rapport.*.in.>'] are not captured")


def test_every_subject_names_the_stream_that_captures_it() -> None:
    assert stream_of("rapport.acme.in.submissions") == INBOUND_STREAM
    assert stream_of("rapport.acme.score.computed") == EVENT_STREAM
    assert stream_of("rapport.acme.deadletter.scoring") == DEADLETTER_STREAM
