"""A synthetic labelled cohort drawn from published recovery curves, not from the alert rules
(`rapport evaluate --curves`). Pure and seeded: the same seed gives the same cohort.

Each client has one outcome measure (PHQ-9 or CORE-10, in turn) over a course of weekly sessions and a
true (noise-free) course:
- a few clients deteriorate (DETERIORATE); their true score worsens along log(session) by a drawn
  amount (DETERIORATION_SIZE, in multiples of the measure's reliable change);
- the others improve along log(session) (the shape of Finch, Lambert & Schaalje's expected recovery
  curves), reaching a reliable improvement at a session T drawn from the dose-response curve: the
  share improved by session n is a probit in log(n) (the model Howard et al. 1986 fitted) through
  "half by session 8" and "three quarters by session 26" (IMPROVED_BY);
- each observed total is the true score plus measurement error: the measure's standard error of
  measurement, from its reliability and SD where the sources give them (CORE-10), else from its
  reliable-change value read back through Jacobson & Truax (PHQ-9; see MEASURES);
- every client attends all 12 sessions, unless `early_endings` is asked for: then an improver ends the
  course at the first session its true course has reliably improved (PARAMETERS["ends_when_improved"]),
  a synthetic assumption that makes the survivorship bias of an expected-trajectory fit visible
  (improvers leave early, so later sessions hold the non-responders). No source in the anchors says who
  leaves when: Swift & Greenberg's ~20% premature discontinuation (SWIFT2012) is dropout against the
  therapist's advice, not improvers ending, so it is not used for this.

Labels come from that truth alone, never from a rule's threshold applied to what a rule sees:
- `reliable_deterioration` at the first session where the *true* score is worse than intake by at least
  the measure's reliable change (the change the registry calls reliable, Jacobson & Truax);
- `not_on_track` at the course's last session for a client whose *true* course ends without reliable
  improvement and still in the clinical range (at or above caseness): the treatment failure that
  not-on-track alerts exist to foresee. Lead time is then how many sessions before the end the rule spoke.
No risk item is endorsed and no alliance measure is sent: the sources give no rate linking either to
a true state, so `critical_item` and `alliance_rupture` have nothing labelled and are not scored here.

Every figure the generator uses is in PARAMETERS or MEASURES with its source and how far it is
verified; `secondary` means read in an abstract or quoted by another source, `derived` computed from
sourced figures, `assumption` a choice of this simulation with no source. Nothing here is clinical
evidence: figures on it say how the rules behave on clients shaped like the literature's averages."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Literal

from rapport.cohort import weekly_start
from rapport.labelled_cohort import CohortSubmission, Label, LabelledCohort
from rapport.shared.instruments.model import Instrument
from rapport.shared.instruments.registry import Registry, load_registry

Confidence = Literal["secondary", "derived", "assumption"]


@dataclass(frozen=True)
class Figure:
    value: float
    source: str
    confidence: Confidence


HOWARD_1986 = ("Howard KI, Kopta SM, Krause MS, Orlinsky DE (1986). The dose-effect relationship in psychotherapy. "
               "Am Psychol 41(2):159-164, doi:10.1037/0003-066X.41.2.159 (abstract, read in a library catalogue "
               "record; not in research/clinical-anchors.md)")
LAMBERT_TOP10 = ("Lambert MJ, 'Top 10 things learned after two decades of tracking client treatment progress', "
                 "Society for the Advancement of Psychotherapy web feature (OQ-45 clients; not in "
                 "research/clinical-anchors.md)")

PARAMETERS: dict[str, Figure] = {
    "improved_by_session_8": Figure(0.50, f"{HOWARD_1986}: 'by 8 sessions approximately 50% of patients are measurably "
                                          f"improved'; {LAMBERT_TOP10}: 'Fifty percent of patients reliably improve "
                                          "after 8 sessions'", "secondary"),
    "improved_by_session_26": Figure(0.75, f"{HOWARD_1986}: 'approximately 75% are improved by 26 sessions'. The "
                                           "issue's 'three quarters by about session 14' was not found in any source "
                                           "read and is not used", "secondary"),
    "deteriorate": Figure(0.075, "5 to 10% of clients deteriorate (Lambert & Ogles 2004, as a chapter abstract quotes "
                                 "it; Lambert 2010, as secondary web sources quote it; not in "
                                 "research/clinical-anchors.md); 7.5% is this simulation's midpoint of that range",
                          "secondary"),
    "deterioration_size_low": Figure(1.0, "assumption: a deteriorating client's true worsening by the course's end, "
                                          "drawn uniformly from 1 to 2 reliable changes", "assumption"),
    "deterioration_size_high": Figure(2.0, "assumption (see deterioration_size_low)", "assumption"),
    "course_sessions": Figure(12, "assumption: every client attends 12 weekly sessions (no dropout is simulated "
                                  "unless early endings are asked for)", "assumption"),
    "ends_when_improved": Figure(1, "assumption (only with early endings, `rapport evaluate --curves "
                                    "--early-endings`): an improver ends the course at the first session its true "
                                    "course has reliably improved; deteriorating and unimproved clients attend all "
                                    "sessions. Synthetic, not a clinical fact: it stands in for 'improvers leave "
                                    "early', the survivorship bias of issue 13", "assumption"),
    "earliest_improvement_session": Figure(2, "assumption: a client drawn as improved before session 2 improves at "
                                              "session 2 (the first score is the intake)", "assumption"),
}

MEASURES: dict[str, dict[str, Figure]] = {
    "core10": {
        "intake_mean": Figure(19.7, "R49 (clinical-anchors §3.1): CORE-10 primary-care counselling M = 19.7",
                              "secondary"),
        "intake_sd": Figure(7.7, "R49: primary-care counselling SD = 7.7", "secondary"),
        "floor": Figure(4.7, "R49: general population M = 4.7; a true course does not improve past it (assumption "
                             "that it is the floor)", "secondary"),
        "measurement_sd": Figure(round(7.7 * math.sqrt(1 - 0.90), 2),
                                 "derived: SD 7.7 x sqrt(1 - .90) (R49, R80, Jacobson & Truax). .90 is "
                                 "Cronbach's alpha (Barkham et al. 2013, V11), internal consistency: no CORE-10 "
                                 "test-retest figure is in the sources", "derived"),
    },
    "phq9": {
        "intake_mean": Figure(15.0, "assumption: no PHQ-9 intake distribution of a treated sample is in the sources",
                              "assumption"),
        "intake_sd": Figure(5.0, "assumption (see intake_mean)", "assumption"),
        "floor": Figure(3.0, "assumption: no PHQ-9 general-population mean is in the sources", "assumption"),
        "measurement_sd": Figure(round(6 / (1.96 * math.sqrt(2)), 2),
                                 "derived: the registry's reliable change 6 (R56, secondary) read back through "
                                 "Jacobson & Truax (R80): RC = 1.96 x sqrt(2) x SE, so SE = 6 / 2.77. No PHQ-9 "
                                 "test-retest reliability or SD is in the sources or the registry", "derived"),
    },
}
INSTRUMENTS = tuple(MEASURES)  # in turn, client by client


def improvement_spread() -> float:
    """The probit's SD in log(sessions): half improved by 8, three quarters by 26."""
    eight, later = PARAMETERS["improved_by_session_8"], PARAMETERS["improved_by_session_26"]
    z = NormalDist().inv_cdf(later.value) - NormalDist().inv_cdf(eight.value)
    return math.log(26 / 8) / z


def share_improved_by(session: float) -> float:
    """The dose-response curve the generator draws from: the share reliably improved by `session`."""
    median = 8 * math.exp(-NormalDist().inv_cdf(PARAMETERS["improved_by_session_8"].value) * improvement_spread())
    return NormalDist().cdf(math.log(session / median) / improvement_spread())


@dataclass(frozen=True)
class TrueCourse:
    """One client's true scores, session 1 (intake) to the course's end, and what they make alert-worthy."""

    instrument: str
    true_scores: list[float]
    deteriorates: bool
    improved_at: float | None  # the session the true course reaches reliable improvement (improvers)
    deteriorated_at: int | None  # the first session truly worse than intake by the reliable change
    failed: bool  # ends without reliable improvement, still in the clinical range
    observed: tuple[int, ...] = ()  # the observed totals of every session, attended or not (build_curve_cohort)
    ends_at: int = 0  # the last session attended (build_curve_cohort)

    def attended(self) -> list[tuple[int, float]]:
        """(session, observed total) of the sessions attended, intake first."""
        return [(s, float(t)) for s, t in enumerate(self.observed[:self.ends_at], start=1)]

    def complete(self) -> list[tuple[int, float]]:
        """(session, observed total) of every session, as if the client had attended them all."""
        return [(s, float(t)) for s, t in enumerate(self.observed, start=1)]


def true_course(instrument: Instrument, rng: random.Random) -> TrueCourse:
    figures = MEASURES[instrument.id]
    sessions = int(PARAMETERS["course_sessions"].value)
    change, caseness = _reliable_change(instrument), _caseness(instrument)
    low, high = _scored_range(instrument)
    intake = _intake(figures, caseness, high, rng)
    floor = max(low, figures["floor"].value)
    deteriorates = rng.random() < PARAMETERS["deteriorate"].value
    improved_at: float | None = None
    if deteriorates:
        size = change * rng.uniform(PARAMETERS["deterioration_size_low"].value,
                                    PARAMETERS["deterioration_size_high"].value)
        scores = [min(high, intake + size * math.log(s) / math.log(sessions)) for s in range(1, sessions + 1)]
    else:
        at = math.exp(rng.gauss(math.log(8) - NormalDist().inv_cdf(PARAMETERS["improved_by_session_8"].value)
                                * improvement_spread(), improvement_spread()))
        improved_at = max(at, PARAMETERS["earliest_improvement_session"].value)
        scores = [max(floor, intake - change * math.log(s) / math.log(improved_at)) for s in range(1, sessions + 1)]
    deteriorated_at = next((s for s, score in enumerate(scores, start=1) if score - intake >= change), None)
    failed = intake - scores[-1] < change and scores[-1] >= caseness
    return TrueCourse(instrument.id, scores, deteriorates, improved_at, deteriorated_at, failed)


def _reliable_change(instrument: Instrument) -> float:
    spec = instrument.reliable_change
    if spec is None or spec.value is None:
        raise ValueError(f"{instrument.id}: the curve cohort needs a fixed reliable-change value")
    return spec.value


def _caseness(instrument: Instrument) -> float:
    if instrument.caseness is None:
        raise ValueError(f"{instrument.id}: the curve cohort needs a caseness cutoff")
    return instrument.caseness.value


def _intake(figures: dict[str, Figure], caseness: float, high: float, rng: random.Random) -> float:
    """Drawn from the measure's intake distribution, within the clinical range (assumption: the cohort is
    clients who start as cases, as NHS Talking Therapies outcomes count them)."""
    while True:
        intake = rng.gauss(figures["intake_mean"].value, figures["intake_sd"].value)
        if caseness <= intake <= high:
            return intake


def _scored_range(instrument: Instrument) -> tuple[float, float]:
    """The total's range with the risk items at 0 (no risk is simulated)."""
    low, high = instrument.total_range
    critical = {c.item for c in instrument.critical_items}
    return low, high - sum(i.max - i.min for i in instrument.scored_items if i.number in critical)


def observed_responses(instrument: Instrument, total: int, rng: random.Random) -> dict[str, int]:
    """Item answers whose scored total is `total`, spread at random; risk items 0; reverse keys undone."""
    critical = {c.item for c in instrument.critical_items}
    open_items = [i for i in instrument.scored_items if i.number not in critical]
    keyed = {i.number: 0 for i in open_items}
    for _ in range(total):
        choice = rng.choice([i for i in open_items if keyed[i.number] < i.max - i.min])
        keyed[choice.number] += 1
    answers = {}
    for item in instrument.scored_items:
        value = int(item.min) + keyed.get(item.number, 0)
        answers[str(item.number)] = int(item.max + item.min - value) if item.reverse else value
    return answers


def ends_at(course: TrueCourse, sessions: int, early_endings: bool) -> int:
    """The last session attended: all of them, or with early endings an improver's first reliably improved
    session (ceil of the session its true course reaches reliable improvement)."""
    if not early_endings or course.improved_at is None or course.improved_at > sessions:
        return sessions
    return max(2, math.ceil(course.improved_at))


def build_curve_cohort(clients: int, seed: int, *, first: int = 1, start: datetime | None = None,
                       registry: Registry | None = None, early_endings: bool = False
                       ) -> tuple[LabelledCohort, list[TrueCourse]]:
    """`clients` clients numbered from `first`, weekly sessions from `start`, labelled from their true course.
    Every session's observation is drawn whether attended or not, so the same seed draws the same scores
    with and without early endings."""
    registry = registry or load_registry()
    sessions = int(PARAMETERS["course_sessions"].value)
    start = start or weekly_start(sessions)
    rng = random.Random(seed)
    cohort = LabelledCohort(description=f"rapport evaluate --curves: {clients} synthetic clients, seed {seed}")
    courses = []
    for n in range(clients):
        instrument = registry.get(INSTRUMENTS[n % len(INSTRUMENTS)])
        assert instrument is not None
        course = true_course(instrument, rng)
        last = ends_at(course, sessions, early_endings)
        client, episode = f"client-{n + first:04d}", f"episode-{n + first:04d}-1"
        low, high = _scored_range(instrument)
        noise = MEASURES[instrument.id]["measurement_sd"].value
        observed = []
        for s, true in enumerate(course.true_scores, start=1):
            total = int(min(high, max(low, round(true + rng.gauss(0, noise)))))
            observed.append(total)
            at = start + timedelta(days=7 * (s - 1), minutes=n)
            sid = f"{client}-s{s:02d}-{instrument.id}"
            body = {"submission_id": sid, "instrument": instrument.id, "client_id": client, "episode_id": episode,
                    "clinician_id": f"clinician-{n % 3 + 1:02d}", "administered_at": at.isoformat(), "session": s,
                    "responses": observed_responses(instrument, total, rng)}
            if s <= last:
                cohort.submissions.append(CohortSubmission(0, sid, client, episode, at, s, json.dumps(body).encode()))
        course = replace(course, observed=tuple(observed), ends_at=last)
        courses.append(course)
        if course.deteriorated_at is not None:
            cohort.labels.append(Label(0, "reliable_deterioration", client, episode, session=course.deteriorated_at,
                                       note="true score worse than intake by the reliable change"))
        if course.failed:
            cohort.labels.append(Label(0, "not_on_track", client, episode, session=sessions,
                                       note="true course ends without reliable improvement, in the clinical range"))
    return cohort, courses


def parameters_table() -> list[dict[str, object]]:
    """Every figure of the generator with its source, for the report."""
    rows: list[dict[str, object]] = [{"name": k, "value": f.value, "confidence": f.confidence, "source": f.source}
                                     for k, f in PARAMETERS.items()]
    rows += [{"name": f"{m}.{k}", "value": f.value, "confidence": f.confidence, "source": f.source}
             for m, figures in MEASURES.items() for k, f in figures.items()]
    return rows
