"""A seeded synthetic cohort with known ground truth, for `rapport demo`, `rapport evaluate` and tests.

Each client follows one storyline over its sessions: on-track recovery, stall, reliable
deterioration, a risk item endorsed, a rupture that is repaired, or one that is not. Every session
produces a PHQ-9 (alternating native JSON and FHIR QuestionnaireResponse with LOINC linkIds) and an
SRS. What each storyline plants (which alert kind, at which session) is returned with the cohort, so
precision and recall of each rule can be measured. Ids are synthetic: client-0001, clinician-01, ...
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

STORYLINES = ("on_track", "stall", "deterioration", "risk", "rupture_repaired", "rupture_unrepaired")
PHQ9_LOINC_ITEMS = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
PHQ9_ANSWERS = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]


def weekly_start(sessions: int, now: datetime | None = None) -> datetime:
    """09:00 on the Monday that leaves `sessions` weekly sessions ending before today: synthetic
    administrations are never in the future, which ingest refuses."""
    today = (now or datetime.now(UTC)).replace(hour=9, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=7 * (sessions + 1))
    return start - timedelta(days=start.weekday())


@dataclass(frozen=True)
class Planted:
    client_id: str
    kind: str  # critical_item | alliance_rupture | reliable_deterioration | not_on_track
    session: int


@dataclass(frozen=True)
class Administration:
    client_id: str
    session: int
    instrument: str
    submission_id: str
    body: bytes


@dataclass
class Cohort:
    tenant: str
    administrations: list[Administration] = field(default_factory=list)
    planted: list[Planted] = field(default_factory=list)
    storylines: dict[str, str] = field(default_factory=dict)


def _split(total: int, items: int, high: int, rng: random.Random) -> list[int]:
    """Item values in [0, high] that add up to total, spread at random."""
    values = [0] * items
    for _ in range(total):
        open_items = [i for i in range(items) if values[i] < high]
        values[rng.choice(open_items)] += 1
    return values


def phq9_totals(storyline: str, sessions: int, rng: random.Random) -> list[int]:
    if storyline == "stall":
        start = rng.randint(14, 18)
        return [max(10, min(24, start + rng.choice((-1, 0, 1)))) for _ in range(sessions)]
    if storyline == "deterioration":
        start = rng.randint(8, 11)
        return [min(24, start + (0 if s < 2 else 2 * (s - 1))) for s in range(sessions)]
    start = rng.randint(15, 20)
    return [max(2, start - round(1.8 * s) + rng.choice((-1, 0, 0, 1))) for s in range(sessions)]


def srs_totals(storyline: str, sessions: int, rupture_at: int, rng: random.Random) -> list[float]:
    level = rng.choice((38.0, 38.5, 39.0))
    totals = [level] * sessions
    if storyline == "rupture_repaired":
        totals[rupture_at] = 30.0
        for s in range(rupture_at + 1, sessions):
            totals[s] = level
    elif storyline == "rupture_unrepaired":
        for s in range(rupture_at, sessions):
            totals[s] = 30.0 if s == rupture_at else 31.0
    return totals


def build_cohort(tenant: str, clients: int, sessions: int, seed: int, *, first: int = 1,
                 start: datetime | None = None) -> Cohort:
    """`clients` clients numbered from `first`, storylines in turn, weekly sessions from `start`."""
    start = start or weekly_start(sessions)
    rng = random.Random(seed)
    cohort = Cohort(tenant=tenant)
    rupture_at = max(3, sessions // 2)
    for n in range(clients):
        storyline = STORYLINES[n % len(STORYLINES)]
        client = f"client-{n + first:04d}"
        clinician = f"clinician-{n % 3 + 1:02d}"
        episode = f"episode-{n + first:04d}-1"
        cohort.storylines[client] = storyline
        phq = phq9_totals(storyline, sessions, rng)
        srs = srs_totals(storyline, sessions, rupture_at, rng)
        risk_session = rupture_at if storyline == "risk" else None
        for s in range(sessions):
            at = start + timedelta(days=7 * s, minutes=n)
            item9 = 1 if s == risk_session else 0
            items = [*_split(phq[s] - item9, 8, 3, rng), item9]
            sid = f"{client}-s{s + 1:02d}-phq9"
            body = (_phq9_fhir if s % 2 else _phq9_native)(sid, client, episode, clinician, at, s + 1, items)
            cohort.administrations.append(Administration(client, s + 1, "phq9", sid, body))
            srs_items = [round(v / 10, 1) for v in _split(round(srs[s] * 10), 4, 100, rng)]
            sid = f"{client}-s{s + 1:02d}-srs"
            cohort.administrations.append(Administration(
                client, s + 1, "srs", sid,
                _native(sid, "srs", client, episode, clinician, at + timedelta(minutes=50), s + 1, srs_items)))
        cohort.planted += _planted(client, storyline, phq, rupture_at, risk_session)
    return cohort


def _planted(client: str, storyline: str, phq: list[int], rupture_at: int, risk_session: int | None) -> list[Planted]:
    if storyline == "risk" and risk_session is not None:
        return [Planted(client, "critical_item", risk_session + 1)]
    if storyline.startswith("rupture"):
        return [Planted(client, "alliance_rupture", rupture_at + 1)]
    if storyline == "deterioration":
        first = next((s for s in range(len(phq)) if phq[s] - phq[0] >= 6), None)  # PHQ-9 reliable change: 6
        worse = [Planted(client, "reliable_deterioration", first + 1)] if first is not None else []
        # still in the clinical range with no improvement at the checkpoint: not on track as well
        stalled = [Planted(client, "not_on_track", 6)] if len(phq) >= 6 else []
        return [*worse, *stalled]
    if storyline == "stall" and len(phq) >= 6:
        return [Planted(client, "not_on_track", 6)]
    return []


def _native(sid: str, instrument: str, client: str, episode: str, clinician: str, at: datetime, session: int,
            items: list[float] | list[int]) -> bytes:
    return json.dumps({
        "submission_id": sid, "instrument": instrument, "client_id": client, "episode_id": episode,
        "clinician_id": clinician, "administered_at": at.isoformat(), "session": session,
        "responses": {str(i + 1): v for i, v in enumerate(items)},
    }).encode()


def _phq9_native(sid: str, client: str, episode: str, clinician: str, at: datetime, session: int,
                 items: list[int]) -> bytes:
    return _native(sid, "phq9", client, episode, clinician, at, session, items)


def _phq9_fhir(sid: str, client: str, episode: str, clinician: str, at: datetime, session: int,
               items: list[int]) -> bytes:
    return json.dumps({
        "resourceType": "QuestionnaireResponse",
        "id": sid,
        "status": "completed",
        "questionnaire": "http://loinc.org/q/44249-1",
        "subject": {"reference": f"Patient/{client}"},
        "author": {"reference": f"Practitioner/{clinician}"},
        "basedOn": [{"reference": f"EpisodeOfCare/{episode}"}],
        "authored": at.isoformat(),
        "item": [
            {"linkId": code, "answer": [{"valueCoding": {"system": "http://loinc.org", "code": PHQ9_ANSWERS[v]}}]}
            for code, v in zip(PHQ9_LOINC_ITEMS, items, strict=True)
        ],
    }).encode()
