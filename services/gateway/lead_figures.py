"""The clinical lead's figures (issue 12 item 3, issue 15 item 4), from the gateway's own read model
(gateway_alerts, gateway_alert_transitions, gateway_scores, gateway_attendance): read with a few SQL
selects, counted by plain functions.

For one tenant (always the caller's token's) and the filters a lead chose, a clinician and a period
of days (`since` to `until`, both days included, UTC):

- **open alerts** by kind and by clinician: alerts raised in the period and not resolved now (open,
  or acknowledged and not yet resolved: the worklist shows both);
- **time from raised to acknowledged** per clinician, median and 90th percentile, over the alerts
  raised in the period that have been acknowledged (the first `acknowledged` transition against the
  `raised` one); the alerts raised and still waiting for an acknowledgement are counted beside it, so
  a fast median never hides the ones nobody has looked at. Percentiles interpolate linearly between
  the ordered times (`statistics.quantiles(method="inclusive")`, numpy's default): the median of 1,
  2, 3, 4 hours is 2.5 hours, the 90th percentile of 1..10 hours 9.1 hours;
- **share of active episodes not on track**: episodes with a score in the period (the denominator),
  and those among them with a not-on-track alert open now, whenever it was raised;
- **ruptures raised vs repaired**: alliance_rupture alerts raised in the period, and how many of them
  have been resolved as `repaired` (as unrepaired, otherwise, or not yet resolved beside it);
- **NHS Talking Therapies outcomes on ended episodes**: the episodes whose ending (planned or unplanned,
  from the alerts service's attendance summary in gateway_attendance) falls in the period. An ended
  episode counts as a finished course of treatment when it had at least two attended sessions and a
  first and a last score (two administrations) on both PHQ-9 and GAD-7; its outcome is the one scoring
  put on the episode's latest PHQ-9 or GAD-7 score (`talking_therapies`, first against latest of both
  measures; services/scoring/domain/talking_therapies.py). Nothing clinical is recomputed here. The
  ended episodes left out are counted beside it (fewer than two attended sessions; no first and last
  score on both measures), and so are the unplanned endings (dropout), per clinician too.

  Sources (/work/shared/research/clinical-anchors.md §3.2 and its December 2026 corrections):
  "finished a course of treatment" is a referral that ended with at least two attended treatment
  appointments, its outcomes on the first and last paired scores [R54 OHID Fingertips glossary, R57
  Gyani et al. 2013]; recovery is a case at the start and below caseness on both measures at the end
  [R55, R56]; reliable improvement and deterioration use PHQ-9 6 and GAD-7 4 points [R56, secondary];
  reliable recovery is recovery with reliable improvement [R57, secondary; exact rule unverified].
  What the sources do not settle, and how it is read here: whether "paired" means PHQ-9 and GAD-7 at
  the same session (read as: a first and a last score on each measure); which attended sessions are
  "treatment" appointments (the attendance summary does not tell assessment from treatment, so every
  attended session counts); reliable improvement's denominator (here every finished course); and the
  condition-specific anxiety measures that replace GAD-7 in the IAPT Data Handbook (not handled: GAD-7
  is used for every course). Dropout has no NHS Talking Therapies definition in the sources: it is
  the issue 15 ending `unplanned` (recorded as such, or read from the attendance by the alerts service).
  An episode is its latest score's clinician's (any instrument), or nobody's when it has no score.

Each figure names the alerts behind it as a `Behind` (which figure, kind, clinician): the same
filters list them (`alerts_behind`), for `/api/v1/figures/alerts` and the page `/lead/alerts`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, cast
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Table, and_, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.gateway.models import AlertTransitionView, AlertView, AttendanceView, ScoreView

alerts_table = cast(Table, AlertView.__table__)
transitions_table = cast(Table, AlertTransitionView.__table__)
scores_table = cast(Table, ScoreView.__table__)
attendance_table = cast(Table, AttendanceView.__table__)

UNRESOLVED = ("open", "acknowledged")
TALKING_THERAPIES_MEASURES = ("phq9", "gad7")
ENDED = ("planned", "unplanned")
# a finished course of treatment: at least two attended treatment appointments (R54, clinical-anchors §3.2)
FINISHED_COURSE_CONTACTS = 2
TALKING_THERAPIES_SOURCES = (
    "R54 OHID Fingertips glossary: finished a course of treatment, caseness",
    "R55 NHS scorecard: recovery rate, reliable improvement",
    "R56 the IAPT Manual as quoted by a secondary source: PHQ-9 10 and GAD-7 8, reliable change 6 and 4",
    "R57 Gyani et al. 2013: reliable recovery (exact rule unverified)")
TALKING_THERAPIES_BASIS = (
    "Episodes that ended in the period (planned or unplanned) after at least two attended sessions, with a "
    "first and a last score on both PHQ-9 and GAD-7: a finished course of treatment (NHS Talking Therapies, "
    "R54). Outcomes are scoring's, latest against first; recovery among those at caseness at the start. "
    "Every attended session counts as a treatment contact: assessment is not told apart.")
FigureName = Literal["open", "acknowledgement", "not_on_track", "ruptures", "ruptures_repaired"]
FIGURES: tuple[FigureName, ...] = ("open", "acknowledgement", "not_on_track", "ruptures", "ruptures_repaired")
UNASSIGNED = "(no clinician)"


@dataclass(frozen=True)
class FigureFilters:
    """What a lead asked for: a clinician (None: all of the tenant) and a period of whole days (UTC)."""

    clinician: str | None = None
    since: date | None = None
    until: date | None = None

    @property
    def start(self) -> datetime | None:
        return datetime.combine(self.since, time(0), UTC) if self.since else None

    @property
    def end(self) -> datetime | None:
        """The first moment after the period: `until` is a day included."""
        return datetime.combine(self.until + timedelta(days=1), time(0), UTC) if self.until else None

    def query(self) -> dict[str, str]:
        return {k: v for k, v in (("clinician", self.clinician or ""),
                                  ("since", self.since.isoformat() if self.since else ""),
                                  ("until", self.until.isoformat() if self.until else "")) if v}


@dataclass(frozen=True)
class Behind:
    """The alerts behind one figure: `figure`, narrowed to a kind or a clinician where the figure is
    a row of a table (clinician `UNASSIGNED`: the alerts that name none)."""

    figure: FigureName
    kind: str | None = None
    clinician: str | None = None

    def query(self, filters: FigureFilters) -> str:
        asked = {**filters.query(), "figure": self.figure}
        if self.kind:
            asked["kind"] = self.kind
        if self.clinician == UNASSIGNED:
            asked.pop("clinician", None)
            asked["unassigned"] = "1"
        elif self.clinician:
            asked["clinician"] = self.clinician
        return urlencode(asked)


# what is read


@dataclass(frozen=True)
class AlertFacts:
    """One alert as the figures need it (no words, no evidence)."""

    alert_id: str
    kind: str
    status: str
    clinician_id: str | None
    client_id: str
    episode_id: str
    opened_at: datetime
    resolution: str | None
    raised_at: datetime | None
    acknowledged_at: datetime | None


Course = Literal["finished", "fewer_than_two_contacts", "unpaired"]


@dataclass(frozen=True)
class EpisodeEnding:
    """An episode's ending as the alerts service summarised it (gateway_attendance)."""

    client_id: str
    episode_id: str
    ending: str  # planned or unplanned
    ended_at: datetime | None  # None when the ending has no date: the summary's as_of stands in for it
    as_of: datetime
    attended: int

    @property
    def dated(self) -> datetime:
        return self.ended_at or self.as_of


@dataclass(frozen=True)
class EpisodeScore:
    """One score of an ended episode, without its numbers: which measure, when, whose, and the NHS Talking
    Therapies figures scoring put on it (PHQ-9 and GAD-7 only)."""

    client_id: str
    episode_id: str
    clinician_id: str | None
    instrument: str
    administered_at: datetime
    submission_id: str
    talking_therapies: dict[str, Any] | None = None


@dataclass(frozen=True)
class EndedEpisode:
    """An ended episode with what the NHS Talking Therapies cohort rule needs to judge it."""

    client_id: str
    episode_id: str
    clinician_id: str | None
    ending: str
    ended_at: datetime
    attended: int
    phq9_scores: int
    gad7_scores: int
    outcome: dict[str, Any] | None  # talking_therapies of the episode's latest PHQ-9 or GAD-7 score

    @property
    def course(self) -> Course:
        """Whether the episode counts as a finished course of treatment (R54): at least two attended
        sessions, then a first and a last score on both measures (two administrations of each)."""
        if self.attended < FINISHED_COURSE_CONTACTS:
            return "fewer_than_two_contacts"
        if self.phq9_scores < 2 or self.gad7_scores < 2 or self.outcome is None:
            return "unpaired"
        return "finished"


def ended_episodes(endings: Iterable[EpisodeEnding], scores: Iterable[EpisodeScore],
                   filters: FigureFilters) -> list[EndedEpisode]:
    """The episodes that ended in the period (by their ending's date), each with its clinician (its latest
    score's), how many PHQ-9 and GAD-7 scores it has and its latest talking_therapies; narrowed to the
    filters' clinician. Pure: what was read goes in, what is counted comes out."""
    by_episode: dict[tuple[str, str], list[EpisodeScore]] = {}
    for score in scores:
        by_episode.setdefault((score.client_id, score.episode_id), []).append(score)
    found: list[EndedEpisode] = []
    for e in endings:
        if e.ending not in ENDED or not _within(e.dated, filters):
            continue
        mine = sorted(by_episode.get((e.client_id, e.episode_id), []),
                      key=lambda s: (s.administered_at, s.submission_id))
        clinician = mine[-1].clinician_id if mine else None
        if filters.clinician is not None and clinician != filters.clinician:
            continue
        paired = [s for s in mine if s.instrument in TALKING_THERAPIES_MEASURES]
        latest = paired[-1].talking_therapies if paired else None
        found.append(EndedEpisode(
            client_id=e.client_id, episode_id=e.episode_id, clinician_id=clinician, ending=e.ending,
            ended_at=e.dated, attended=e.attended,
            phq9_scores=sum(1 for s in paired if s.instrument == "phq9"),
            gad7_scores=sum(1 for s in paired if s.instrument == "gad7"),
            outcome=latest if isinstance(latest, dict) else None))
    return found


@dataclass(frozen=True)
class ReadModel:
    alerts: Sequence[AlertFacts]
    active_episodes: frozenset[tuple[str, str]]
    ended: Sequence[EndedEpisode]


def _in_period(column: Any, filters: FigureFilters) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if filters.start is not None:
        found.append(column >= filters.start)
    if filters.end is not None:
        found.append(column < filters.end)
    return found


def _of_clinician(column: Any, filters: FigureFilters) -> list[ColumnElement[bool]]:
    return [column == filters.clinician] if filters.clinician is not None else []


async def read_model(session: AsyncSession, tenant: str, filters: FigureFilters) -> ReadModel:
    """What the figures count, for `tenant` only: four selects, whatever the size of the period."""
    a, t, s = alerts_table.c, transitions_table.c, scores_table.c
    firsts = (select(t.alert_id,
                     func.min(t.at).filter(t.transition == "raised").label("raised_at"),
                     func.min(t.at).filter(t.transition == "acknowledged").label("acknowledged_at"))
              .where(t.tenant == tenant, t.transition.in_(["raised", "acknowledged"]))
              .group_by(t.alert_id).subquery())
    raised_in_period = and_(true(), *_in_period(a.opened_at, filters))
    still_not_on_track = and_(a.kind == "not_on_track", a.status.in_(UNRESOLVED))
    rows = (await session.execute(
        select(a.alert_id, a.kind, a.status, a.clinician_id, a.client_id, a.episode_id, a.opened_at,
               a.alert["resolution"].as_string().label("resolution"),  # not the whole document
               firsts.c.raised_at, firsts.c.acknowledged_at)
        .outerjoin(firsts, firsts.c.alert_id == a.alert_id)
        .where(a.tenant == tenant, *_of_clinician(a.clinician_id, filters),
               or_(raised_in_period, still_not_on_track)))).all()
    alerts = [AlertFacts(alert_id=r.alert_id, kind=r.kind, status=r.status, clinician_id=r.clinician_id,
                         client_id=r.client_id, episode_id=r.episode_id, opened_at=r.opened_at,
                         resolution=r.resolution, raised_at=_utc(r.raised_at),
                         acknowledged_at=_utc(r.acknowledged_at)) for r in rows]
    episodes = (await session.execute(
        select(s.client_id, s.episode_id).distinct()
        .where(s.tenant == tenant, *_in_period(s.administered_at, filters), *_of_clinician(s.clinician_id, filters))
    )).all()
    att = attendance_table.c
    ending = att.summary["ending"].as_string()
    ended = (select(att.client_id, att.episode_id, att.as_of, ending.label("ending"),
                    att.summary["ended_at"].as_string().label("ended_at"),
                    att.summary["attended"].as_integer().label("attended"))
             .where(att.tenant == tenant, ending.in_(ENDED)).subquery())
    endings = [EpisodeEnding(r.client_id, r.episode_id, r.ending, _moment(r.ended_at), _utc(r.as_of) or r.as_of,
                             r.attended or 0)
               for r in (await session.execute(select(ended))).all()]
    # the scores of the ended episodes: only PHQ-9's and GAD-7's NHS Talking Therapies figures are read
    score_rows = (await session.execute(
        select(s.client_id, s.episode_id, s.clinician_id, s.instrument, s.administered_at, s.submission_id,
               s.score["talking_therapies"].label("talking_therapies"))
        .join(ended, and_(ended.c.client_id == s.client_id, ended.c.episode_id == s.episode_id))
        .where(s.tenant == tenant))).all()
    scores = [EpisodeScore(r.client_id, r.episode_id, r.clinician_id, r.instrument,
                           _utc(r.administered_at) or r.administered_at, r.submission_id,
                           r.talking_therapies) for r in score_rows]
    return ReadModel(alerts, frozenset((c, e) for c, e in episodes), ended_episodes(endings, scores, filters))


def _moment(value: str | None) -> datetime | None:
    if not value:
        return None
    return _utc(datetime.fromisoformat(value))


def _within(moment: datetime, filters: FigureFilters) -> bool:
    return ((filters.start is None or moment >= filters.start)
            and (filters.end is None or moment < filters.end))


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# what is counted


@dataclass(frozen=True)
class Count:
    label: str
    count: int
    behind: Behind


@dataclass(frozen=True)
class AcknowledgementTimes:
    clinician: str
    acknowledged: int
    waiting: int  # raised in the period, neither acknowledged nor resolved
    median_seconds: float | None
    p90_seconds: float | None
    behind: Behind


@dataclass(frozen=True)
class EndingCounts:
    """The ended episodes of one clinician (or `all`), and the NHS Talking Therapies figures of those
    among them that finished a course of treatment."""

    clinician: str
    ended: int
    planned: int
    unplanned: int  # dropout
    fewer_than_two_contacts: int  # not counted
    unpaired: int  # two or more contacts, but no first and last score on both measures: not counted
    finished: int
    case_at_start: int
    recovered: int
    reliable_improvement: int
    reliable_deterioration: int
    reliably_recovered: int

    @property
    def dropout_rate(self) -> float | None:
        """Unplanned endings among the ended episodes."""
        return _share(self.unplanned, self.ended)

    @property
    def recovery_rate(self) -> float | None:
        """Among the finished courses that started at caseness, as the programme counts recovery (R55)."""
        return _share(self.recovered, self.case_at_start)

    @property
    def reliable_improvement_rate(self) -> float | None:
        return _share(self.reliable_improvement, self.finished)

    @property
    def reliable_recovery_rate(self) -> float | None:
        return _share(self.reliably_recovered, self.case_at_start)

    def as_json(self) -> dict[str, Any]:
        return {"clinician": self.clinician, "ended": self.ended, "planned": self.planned,
                "unplanned": self.unplanned, "dropout_rate": self.dropout_rate,
                "fewer_than_two_contacts": self.fewer_than_two_contacts, "unpaired": self.unpaired,
                "finished": self.finished, "case_at_start": self.case_at_start, "recovered": self.recovered,
                "recovery_rate": self.recovery_rate, "reliable_improvement": self.reliable_improvement,
                "reliable_improvement_rate": self.reliable_improvement_rate,
                "reliable_deterioration": self.reliable_deterioration,
                "reliably_recovered": self.reliably_recovered, "reliable_recovery_rate": self.reliable_recovery_rate}


def ending_counts(clinician: str, episodes: Sequence[EndedEpisode]) -> EndingCounts:
    """Counts over ended episodes (pure); the outcome figures over the finished courses only."""
    finished = [e.outcome or {} for e in episodes if e.course == "finished"]
    return EndingCounts(
        clinician=clinician, ended=len(episodes),
        planned=sum(1 for e in episodes if e.ending == "planned"),
        unplanned=sum(1 for e in episodes if e.ending == "unplanned"),
        fewer_than_two_contacts=sum(1 for e in episodes if e.course == "fewer_than_two_contacts"),
        unpaired=sum(1 for e in episodes if e.course == "unpaired"),
        finished=len(finished),
        case_at_start=sum(1 for o in finished if o.get("case_at_start") is True),
        recovered=sum(1 for o in finished if o.get("recovered") is True),
        reliable_improvement=sum(1 for o in finished if o.get("reliable_improvement") is True),
        reliable_deterioration=sum(1 for o in finished if o.get("reliable_deterioration") is True),
        reliably_recovered=sum(1 for o in finished if o.get("reliably_recovered") is True))


@dataclass(frozen=True)
class Figures:
    filters: FigureFilters
    open_total: int
    open_unacknowledged: int
    open_by_kind: list[Count]
    open_by_clinician: list[Count]
    acknowledgement: list[AcknowledgementTimes]
    acknowledgement_all: AcknowledgementTimes
    active_episodes: int
    episodes_not_on_track: int
    ruptures_raised: int
    ruptures_repaired: int
    ruptures_unrepaired: int
    ruptures_open: int
    endings: EndingCounts
    endings_by_clinician: list[EndingCounts]
    behind: dict[FigureName, Behind]

    @property
    def not_on_track_share(self) -> float | None:
        return _share(self.episodes_not_on_track, self.active_episodes)

    def as_json(self) -> dict[str, Any]:
        def link(behind: Behind) -> dict[str, str]:
            q = behind.query(self.filters)
            return {"alerts": f"/api/v1/figures/alerts?{q}", "page": f"/lead/alerts?{q}"}

        def counted(rows: Iterable[Count], name: str) -> list[dict[str, Any]]:
            return [{name: r.label, "count": r.count, **link(r.behind)} for r in rows]

        def times(row: AcknowledgementTimes) -> dict[str, Any]:
            return {"clinician": row.clinician, "acknowledged": row.acknowledged, "waiting": row.waiting,
                    "median_seconds": row.median_seconds, "p90_seconds": row.p90_seconds, **link(row.behind)}

        f = self.filters
        return {
            "filters": {"clinician": f.clinician, "since": f.since.isoformat() if f.since else None,
                        "until": f.until.isoformat() if f.until else None},
            "open_alerts": {"description": "raised in the period and not resolved (open or acknowledged)",
                            "total": self.open_total, "unacknowledged": self.open_unacknowledged,
                            **link(self.behind["open"]), "by_kind": counted(self.open_by_kind, "kind"),
                            "by_clinician": counted(self.open_by_clinician, "clinician")},
            "time_to_acknowledge": {
                "description": "raised to first acknowledged, over alerts raised in the period and acknowledged; "
                               "percentiles interpolated linearly; waiting: raised in the period, neither "
                               "acknowledged nor resolved",
                "all": times(self.acknowledgement_all), "by_clinician": [times(r) for r in self.acknowledgement]},
            "not_on_track": {"description": "episodes with a score in the period, and those among them with a "
                                            "not-on-track alert open now",
                             "active_episodes": self.active_episodes, "not_on_track": self.episodes_not_on_track,
                             "share": self.not_on_track_share, **link(self.behind["not_on_track"])},
            "ruptures": {"description": "alliance ruptures raised in the period, and how they were resolved",
                         "raised": self.ruptures_raised, "repaired": self.ruptures_repaired,
                         "unrepaired": self.ruptures_unrepaired, "not_resolved": self.ruptures_open,
                         **link(self.behind["ruptures"]),
                         "repaired_alerts": link(self.behind["ruptures_repaired"])},
            "talking_therapies": {"basis": TALKING_THERAPIES_BASIS, "closed_episodes_known": True,
                                  "sources": list(TALKING_THERAPIES_SOURCES),
                                  **{k: v for k, v in self.endings.as_json().items() if k != "clinician"},
                                  "by_clinician": [row.as_json() for row in self.endings_by_clinician],
                                  "alerts": None},
        }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def percentiles(seconds: Sequence[float]) -> tuple[float | None, float | None]:
    """Median and 90th percentile, interpolated linearly between the ordered values; None without any."""
    if not seconds:
        return None, None
    if len(seconds) == 1:
        return float(seconds[0]), float(seconds[0])
    cuts = statistics.quantiles(sorted(seconds), n=10, method="inclusive")
    return float(statistics.median(seconds)), round(float(cuts[8]), 3)


def raised_in(alert: AlertFacts, filters: FigureFilters) -> bool:
    return _within(alert.opened_at, filters)


def selected(model: ReadModel, filters: FigureFilters, behind: Behind) -> list[AlertFacts]:
    """The alerts behind a figure (the clinician filter was applied when they were read)."""
    picked: list[AlertFacts] = []
    for a in model.alerts:
        if behind.kind is not None and a.kind != behind.kind:
            continue
        if behind.clinician is not None and (a.clinician_id or UNASSIGNED) != behind.clinician:
            continue
        if behind.figure == "open":
            keep = raised_in(a, filters) and a.status in UNRESOLVED
        elif behind.figure == "acknowledgement":
            keep = raised_in(a, filters) and (a.acknowledged_at is not None or a.status == "open")
        elif behind.figure == "not_on_track":
            keep = (a.kind == "not_on_track" and a.status in UNRESOLVED
                    and (a.client_id, a.episode_id) in model.active_episodes)
        elif behind.figure == "ruptures":
            keep = a.kind == "alliance_rupture" and raised_in(a, filters)
        else:
            keep = a.kind == "alliance_rupture" and raised_in(a, filters) and a.resolution == "repaired"
        if keep:
            picked.append(a)
    return picked


def _times(clinician: str, alerts: Sequence[AlertFacts], behind: Behind) -> AcknowledgementTimes:
    waits = [(a.acknowledged_at - (a.raised_at or a.opened_at)).total_seconds()
             for a in alerts if a.acknowledged_at is not None]
    median, p90 = percentiles(waits)
    return AcknowledgementTimes(clinician, len(waits), sum(1 for a in alerts if a.acknowledged_at is None),
                                median, p90, behind)


def count(model: ReadModel, filters: FigureFilters) -> Figures:
    """Every figure from what was read (pure)."""
    opened = selected(model, filters, Behind("open"))
    kinds: dict[str, int] = {}
    clinicians: dict[str, int] = {}
    for a in opened:
        kinds[a.kind] = kinds.get(a.kind, 0) + 1
        clinicians[a.clinician_id or UNASSIGNED] = clinicians.get(a.clinician_id or UNASSIGNED, 0) + 1
    acknowledgement = selected(model, filters, Behind("acknowledgement"))
    by_clinician: dict[str, list[AlertFacts]] = {}
    for a in acknowledgement:
        by_clinician.setdefault(a.clinician_id or UNASSIGNED, []).append(a)
    not_on_track = selected(model, filters, Behind("not_on_track"))
    ruptures = selected(model, filters, Behind("ruptures"))
    by_ended_clinician: dict[str, list[EndedEpisode]] = {}
    for e in model.ended:
        by_ended_clinician.setdefault(e.clinician_id or UNASSIGNED, []).append(e)
    return Figures(
        filters=filters, open_total=len(opened), open_unacknowledged=sum(1 for a in opened if a.status == "open"),
        open_by_kind=[Count(k, n, Behind("open", kind=k))
                      for k, n in sorted(kinds.items(), key=lambda x: (-x[1], x[0]))],
        open_by_clinician=[Count(c, n, Behind("open", clinician=c))
                           for c, n in sorted(clinicians.items(), key=lambda x: (-x[1], x[0]))],
        acknowledgement=[_times(c, rows, Behind("acknowledgement", clinician=c))
                         for c, rows in sorted(by_clinician.items())],
        acknowledgement_all=_times("all", acknowledgement, Behind("acknowledgement")),
        active_episodes=len(model.active_episodes),
        episodes_not_on_track=len({(a.client_id, a.episode_id) for a in not_on_track}),
        ruptures_raised=len(ruptures),
        ruptures_repaired=sum(1 for a in ruptures if a.resolution == "repaired"),
        ruptures_unrepaired=sum(1 for a in ruptures if a.status == "resolved" and a.resolution != "repaired"),
        ruptures_open=sum(1 for a in ruptures if a.status != "resolved"),
        endings=ending_counts("all", model.ended),
        endings_by_clinician=[ending_counts(c, rows) for c, rows in sorted(by_ended_clinician.items())],
        behind={name: Behind(name) for name in FIGURES},
    )


async def figures(session: AsyncSession, tenant: str, filters: FigureFilters) -> Figures:
    return count(await read_model(session, tenant, filters), filters)


async def alerts_behind(session: AsyncSession, tenant: str, filters: FigureFilters,
                        behind: Behind) -> list[Any]:
    """The gateway_alerts rows behind one figure, most urgent first (as the alert API orders them)."""
    ids = [a.alert_id for a in selected(await read_model(session, tenant, filters), filters, behind)]
    if not ids:
        return []
    a = alerts_table.c
    return list((await session.execute(select(alerts_table).where(a.tenant == tenant, a.alert_id.in_(ids))
                                        .order_by(a.urgency, a.opened_at, a.alert_id))).all())
