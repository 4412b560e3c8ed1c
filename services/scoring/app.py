"""Composition root of the scoring service: `rapport serve scoring`."""

from __future__ import annotations

from datetime import timedelta

from faststream.asgi import AsgiFastStream

from rapport.services.scoring.handlers import SERVICE, Scoring
from rapport.services.scoring.models import inbox, outbox
from rapport.services.scoring.unit_of_work import ScoringUnitOfWork
from rapport.shared.contracts.score import ScoreComputed
from rapport.shared.instruments import load_registry
from rapport.shared.messaging import subjects
from rapport.shared.service import ServiceRuntime
from rapport.shared.settings import Settings


def build(settings: Settings, broker_url: str) -> tuple[ServiceRuntime, AsgiFastStream]:
    runtime = ServiceRuntime(SERVICE, settings, broker_url, inbox=inbox, outbox=outbox)
    runtime.subscribe(
        subjects.SUBMISSION_ACCEPTED, "scoring-v2", Scoring(load_registry(), timedelta(days=settings.episode_gap_days)),
        unit_of_work=ScoringUnitOfWork.on, description="Scores each accepted submission and publishes score.computed",
    )
    runtime.publishes("rapport.{tenant}.score.computed", ScoreComputed,
                      description="Exact score, band, critical items and change in the episode")
    return runtime, runtime.asgi()
