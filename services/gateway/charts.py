"""The client view's charts as plain geometry (issue 12 item 2): one episode's record in, the
points, lines, bands and markers of each measure's chart out, in SVG user units. Pure: no request,
no database, no clock; the template (templates/client_chart.html) only writes out what is here.

What the charts show, and where each number comes from (nothing is drawn that the record does not
carry; where it carries nothing, the chart's `notes` say so):

- **Session axis.** The alerts service's session count, so a marker sits where its alert's evidence
  says: the score's `session_number` when the sender gave one, else the count of distinct
  administration days in the episode so far, across instruments (services/alerts/rules/engine.py,
  `evaluate`). Outcome and alliance charts share the axis.
- **Caseness line**: the score's `parameters.caseness_cutoff` (PHQ-9 10, GAD-7 8 in the registry).
  **Concern line** for an alliance measure: `parameters.concern_cutoff` (SRS below 36).
- **Reliable-change band**: baseline (the episode's first score of the measure, or `change.baseline_total`)
  plus and minus `parameters.reliable_change`, with `reliable_change_source`. None without a value
  (SRS has none in the registry).
- **Expected trajectory and boundary**: only at the sessions where a not_on_track alert's evidence
  carries `expected` and `boundary` (the tenant's fit at that checkpoint, services/alerts/rules/
  trajectory.py). The read model holds no fit of its own, so between checkpoints nothing is drawn.
- **Alert markers** (each a shape and a word, never colour alone): raised (a triangle; `rupture` for
  an alliance rupture) at the session of the alert's first evidence (a rupture's escalation evidence
  names the opening score, `opened_by`); escalated (a cross) at its escalation evidence; resolved (a
  square; `repaired`, a diamond, for a repaired rupture). The read model does not record which score
  resolved an alert, so a resolution by the rules is placed at the first later score of the measure
  that meets the rule's clearing condition where the evidence carries it (a repair: back to
  `level_to_regain`), else at the first later score of the measure; a resolution by a person at the
  last session administered before it was done. `placed` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from rapport.services.gateway.records import AlertShown, EpisodeRecord, ScoreShown

WIDTH = 800
PLOT_LEFT = 52
PLOT_RIGHT = 640  # the right margin holds the direct labels of the lines
LANE = 18  # one row of alert markers above the plot
LABEL_CHAR = 6.2  # the width of a character of an 11 px label, near enough to keep labels apart
TOP_PAD = 10
BOTTOM = 40  # the session axis and its label
PLOT_HEIGHT = {"outcome": 200, "alliance": 160}
RULES = "rapport/alerts"
# the shape and the line pattern of each series: a subscale is told by its shape and its label too
SERIES_STYLE = {None: ("circle", ""), "goal": ("square", "6 3"), "task": ("diamond", "2 3"),
                "bond": ("triangle", "8 3 2 3")}
SHAPE_OF_MARK = {"raised": "triangle", "rupture": "triangle", "escalated": "cross", "resolved": "square",
                 "repaired": "diamond"}
KIND_TITLES = {"critical_item": "risk item", "alliance_rupture": "alliance rupture",
               "reliable_deterioration": "reliable deterioration", "not_on_track": "not on track",
               "disengagement": "disengagement"}


@dataclass(frozen=True)
class Scale:
    """A linear map from a domain to a pixel range (the range may run downwards, as a y axis does)."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low
        fraction = (value - self.low) / span if span else 0.5
        return round(self.start + fraction * (self.end - self.start), 2)


@dataclass(frozen=True)
class Point:
    session: int
    value: float
    x: float
    y: float
    submission_id: str = ""


@dataclass(frozen=True)
class Series:
    """A measure's total or one subscale over the sessions."""

    name: str  # "total", or the subscale
    label: str
    shape: str
    dash: str
    points: tuple[Point, ...]

    @property
    def path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{p.x:g},{p.y:g}" for i, p in enumerate(self.points))


@dataclass(frozen=True)
class Guide:
    """A horizontal line at a threshold the record names."""

    kind: str  # caseness | concern
    value: float
    y: float
    label: str


@dataclass(frozen=True)
class Band:
    baseline: float
    reliable_change: float
    low: float
    high: float
    y_top: float
    y_bottom: float
    label: str


@dataclass(frozen=True)
class Label:
    """A word in the right margin naming a line, the band or a series, moved clear of the others."""

    text: str
    y: float
    css: str  # series | guide | band
    names: str  # the series or guide it names


@dataclass(frozen=True)
class Mark:
    """Where an alert was raised, escalated or resolved, as its evidence and transitions say."""

    kind: str  # raised | rupture | escalated | resolved | repaired
    alert_id: str
    alert_kind: str
    session: int
    x: float
    y: float
    shape: str
    label: str
    placed: str  # evidence | rule | time
    words: str


@dataclass(frozen=True)
class Chart:
    chart_id: str
    instrument: str
    kind: str  # outcome | alliance
    title: str
    description: str
    width: int
    height: int
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    x_ticks: tuple[tuple[int, float], ...]
    y_ticks: tuple[tuple[float, float], ...]
    series: tuple[Series, ...]
    guides: tuple[Guide, ...]
    band: Band | None
    expected: tuple[Point, ...]
    boundary: tuple[Point, ...]
    marks: tuple[Mark, ...]
    notes: tuple[str, ...]
    better: str
    labels: tuple[Label, ...] = ()

    @property
    def expected_path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{p.x:g},{p.y:g}" for i, p in enumerate(self.expected))


@dataclass(frozen=True)
class Row:
    """One score as the table shows it."""

    session: int
    score: ScoreShown
    subscales: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EpisodeCharts:
    outcome: tuple[Chart, ...]
    alliance: tuple[Chart, ...]
    rows: tuple[Row, ...]
    alert_marks: dict[str, tuple[Mark, ...]]  # by alert id, every mark, on a chart or not
    sessions: tuple[int, int]


def session_numbers(scores: Sequence[ScoreShown]) -> list[int]:
    """The session of each score, in administration order, counted as the alerts service counts."""
    found: list[int] = []
    count, last_day = 0, None
    for s in scores:
        day = s.administered_at.date()
        if last_day is None or day > last_day:
            count, last_day = count + 1, day
        found.append(s.session_number if s.session_number is not None else count)
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _naming(alert: AlertShown) -> str:
    return f" ({', '.join(alert.parts)})" if alert.parts else ""


def _value(row: Row, subscale: str | None) -> float | None:
    return row.score.total if subscale is None else row.subscales.get(subscale)


def _place(alert: AlertShown, rows: Sequence[Row], session_of: dict[str, int]) -> list[tuple[str, int, str]]:
    """(mark kind, session, placed) for each moment of the alert the record lets us place."""
    evidence = alert.evidence
    found: list[tuple[str, int, str]] = []
    rupture = alert.kind == "alliance_rupture"
    opener = next((e["values"].get("opened_by") for e in evidence if e.get("values", {}).get("opened_by")), None)
    first = session_of.get(str(opener)) if opener else None
    if first is None and evidence:
        first = session_of.get(evidence[0].get("submission_id", ""))
        if first is None:
            first = int(v) if (v := _number(evidence[0].get("values", {}).get("session"))) is not None else None
    if first is not None:
        found.append(("rupture" if rupture else "raised", first, "evidence"))
    for e in evidence:
        if "sessions_since_rupture" in e.get("values", {}) and (at := session_of.get(e.get("submission_id", ""))):
            found.append(("escalated", at, "evidence"))
    if alert.status != "resolved":
        return found
    resolved = next((t for t in reversed(alert.transitions) if t.transition == "resolved"), None)
    kind = "repaired" if alert.resolution == "repaired" else "resolved"
    measure = [r for r in rows if r.score.instrument == alert.instrument]
    by_person = resolved.by != RULES if resolved is not None else alert.resolution == "by_hand"
    if by_person:
        when = resolved.at if resolved is not None else alert.updated_at
        before = [r.session for r in measure if r.score.administered_at <= when] or [r.session for r in rows]
        if before:
            found.append((kind, max(before), "time"))
        return found
    last = max((session_of[e["submission_id"]] for e in evidence if e.get("submission_id") in session_of),
               default=first if first is not None else 0)
    later = [r for r in measure if r.session > last]
    level = next((_number(e["values"].get("level_to_regain")) for e in reversed(evidence)
                  if e.get("values", {}).get("level_to_regain") is not None), None)
    if alert.resolution == "repaired" and level is not None:
        meeting = [r for r in later if (v := _value(r, alert.subscale)) is not None and v >= level]
        later = meeting or later
    if later:
        found.append((kind, later[0].session, "rule"))
    return found


def _mark_words(kind: str, alert: AlertShown, session: int) -> str:
    what = KIND_TITLES.get(alert.kind, alert.kind) + _naming(alert)
    verb = {"raised": "raised", "rupture": "raised", "escalated": "escalated, not repaired",
            "resolved": f"resolved ({(alert.resolution or '').replace('_', ' ')})", "repaired": "repaired"}[kind]
    return f"{what} {verb} at session {session}"


def _label(kind: str, alert: AlertShown) -> str:
    if kind in ("rupture", "repaired", "escalated"):
        return kind + _naming(alert)
    return f"{kind}: {KIND_TITLES.get(alert.kind, alert.kind)}"


def episode_charts(record: EpisodeRecord, instrument_names: dict[str, str] | None = None) -> EpisodeCharts:
    """Every chart of one episode: one per outcome measure, one per alliance measure, on one session axis."""
    names = instrument_names or {}
    sessions = session_numbers(record.scores)
    rows = tuple(Row(n, s, {k: float(v) for k, v in (s.score.get("subscales") or {}).items()
                            if _number(v) is not None}) for n, s in zip(sessions, record.scores, strict=True))
    session_of = {r.score.submission_id: r.session for r in rows}
    first, last = (min(sessions), max(sessions)) if sessions else (1, 1)
    placed = {a.alert_id: _place(a, rows, session_of) for a in record.alerts}
    instruments: dict[str, list[Row]] = {}
    for r in rows:
        instruments.setdefault(r.score.instrument, []).append(r)
    charts: dict[str, list[Chart]] = {"outcome": [], "alliance": []}
    all_marks: dict[str, list[Mark]] = {a.alert_id: [] for a in record.alerts}
    for instrument, measured in instruments.items():
        kind = "alliance" if measured[-1].score.score.get("kind") == "alliance" else "outcome"
        chart = _chart(instrument, names.get(instrument, instrument.upper()), kind, measured, (first, last),
                       [a for a in record.alerts if a.instrument == instrument], placed)
        charts[kind].append(chart)
        for m in chart.marks:
            all_marks[m.alert_id].append(m)
    for a in record.alerts:  # alerts on no chart (an attendance alert) keep their places for the table
        if not all_marks[a.alert_id]:
            all_marks[a.alert_id] = [Mark(k, a.alert_id, a.kind, s, 0, 0, SHAPE_OF_MARK[k], _label(k, a), p,
                                          _mark_words(k, a, s)) for k, s, p in placed[a.alert_id]]
    return EpisodeCharts(tuple(charts["outcome"]), tuple(charts["alliance"]), rows,
                         {k: tuple(v) for k, v in all_marks.items()}, (first, last))


def _ticks(low: float, high: float) -> list[float]:
    span = high - low
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if span / s <= 6) if span > 0 else 1
    start = -(-low // step) * step
    ticks, value = [], start
    while value <= high + 1e-9:
        ticks.append(round(value, 6))
        value += step
    return ticks


def _chart(instrument: str, name: str, kind: str, rows: Sequence[Row], axis: tuple[int, int],
           alerts: Sequence[AlertShown], placed: dict[str, list[tuple[str, int, str]]]) -> Chart:
    latest = rows[-1].score
    parameters = latest.parameters
    low = _number(latest.score.get("total_min"))
    high = _number(latest.score.get("total_max"))
    values = [r.score.total for r in rows] + [v for r in rows for v in r.subscales.values()]
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    if kind == "alliance" and rows[-1].subscales:  # WAI-SR subscales (sums of 4 items) share the total's axis
        low = min(low, *rows[-1].subscales.values())
    first, last = axis
    x = Scale(first - 0.5, last + 0.5, PLOT_LEFT, PLOT_RIGHT)
    moments = sorted(((a, k, s, p) for a in alerts for k, s, p in placed.get(a.alert_id, [])),
                     key=lambda m: (m[2], m[0].opened_at))
    lane_of = _lanes([(x(s), _label(k, a)) for a, k, s, _ in moments])
    lanes = max(lane_of, default=-1) + 1
    top = TOP_PAD + LANE * lanes + (6 if lanes else 0)
    bottom = top + PLOT_HEIGHT[kind]
    y = Scale(low, high, bottom, top)
    better = str(latest.score.get("better", "lower"))

    subscale_names = sorted({k for r in rows for k in r.subscales})
    series = [Series("total", "total", *SERIES_STYLE[None],
                     tuple(Point(r.session, r.score.total, x(r.session), y(r.score.total), r.score.submission_id)
                           for r in rows))]
    for part in subscale_names:
        shape, dash = SERIES_STYLE.get(part, ("circle", "4 2"))
        series.append(Series(part, part, shape, dash, tuple(
            Point(r.session, r.subscales[part], x(r.session), y(r.subscales[part]), r.score.submission_id)
            for r in rows if part in r.subscales)))

    notes: list[str] = []
    guides: list[Guide] = []
    caseness = _number(parameters.get("caseness_cutoff"))
    if caseness is not None:
        guides.append(Guide("caseness", caseness, y(caseness), f"caseness {caseness:g}"))
        side = "at or above" if better == "lower" else "below"
        notes.append(f"Solid line: the caseness cutoff, {caseness:g} ({side} is in the clinical range).")
    concern = _number(parameters.get("concern_cutoff"))
    if concern is not None:
        guides.append(Guide("concern", concern, y(concern), f"concern below {concern:g}"))
        notes.append(f"Solid line: the alliance concern cutoff; a total below {concern:g} is a possible "
                     "alliance problem.")
    if caseness is None and concern is None:
        notes.append("No cutoff for this measure in the record.")

    band = None
    rc = _number(parameters.get("reliable_change"))
    change = next((r.score.change for r in rows if r.score.change), None)
    baseline = _number(change.get("baseline_total")) if change else None
    baseline = rows[0].score.total if baseline is None else baseline
    if rc is not None:
        band_low, band_high = max(low, baseline - rc), min(high, baseline + rc)
        source = parameters.get("reliable_change_source")
        band = Band(baseline, rc, band_low, band_high, y(band_high), y(band_low),
                    f"baseline {baseline:g} \u00b1 {rc:g}")
        notes.append(f"Shaded band: baseline {baseline:g} plus or minus the reliable change value {rc:g}"
                     + (f" (source {source})" if source else "") + "; a score outside it is a reliable change.")
    else:
        notes.append("No reliable-change value for this measure in the record, so no band is drawn.")

    expected: list[Point] = []
    boundary: list[Point] = []
    for a in alerts:
        if a.kind != "not_on_track":
            continue
        for e in a.evidence:
            v = e.get("values", {})
            session = _number(v.get("session"))
            ev, bv = _number(v.get("expected")), _number(v.get("boundary"))
            if session is None or ev is None or bv is None:
                continue
            s = int(session)
            if all(p.session != s for p in expected):
                expected.append(Point(s, ev, x(s), y(min(max(ev, low), high))))
                boundary.append(Point(s, bv, x(s), y(min(max(bv, low), high))))
    expected.sort(key=lambda p: p.session)
    boundary.sort(key=lambda p: p.session)
    if kind == "outcome":
        if expected:
            notes.append("Open rings: the expected score at the checkpoints a not-on-track alert looked at; "
                         "bars: the boundary beyond which a score is off track (the clinic's fit). The record has "
                         "no fit between checkpoints.")
        else:
            notes.append("Expected trajectory: not available. The record has no trajectory fit for this episode "
                         "(it is shown only where a not-on-track alert's evidence carries one).")

    marks = []
    for (a, k, s, p), lane in zip(moments, lane_of, strict=True):
        marks.append(Mark(k, a.alert_id, a.kind, s, x(s), TOP_PAD + LANE * lane + LANE / 2, SHAPE_OF_MARK[k],
                          _label(k, a), p, _mark_words(k, a, s)))
    if marks:
        notes.append("Markers above the chart: \u25b2 raised (or rupture), \u2715 escalated, \u25a0 resolved, "
                     "\u25c6 repaired, each with its word; the dotted line runs down to its session.")
    if any(m.placed == "rule" for m in marks):
        notes.append("A resolution by the rules is placed at the first later score that meets the rule's "
                     "condition (the record does not name the score that resolved it).")

    wanted = [(g.label, g.y + 4, "guide", g.kind) for g in guides]
    if band is not None:
        wanted.append((band.label, (band.y_top + band.y_bottom) / 2 + 4, "band", "reliable-change"))
    wanted += [(line.label, line.points[-1].y + 4, "series", line.name) for line in series if line.points]
    labels = tuple(Label(text, y_at, css, named) for (text, _, css, named), y_at
                   in zip(wanted, _spread([w[1] for w in wanted]), strict=True))
    x_ticks = tuple((s, x(s)) for s in _session_ticks(first, last))
    y_ticks = tuple((v, y(v)) for v in _ticks(low, high))
    what = "alliance" if kind == "alliance" else "outcome"
    totals = ", ".join(f"session {r.session}: {r.score.total:g}" for r in rows)
    description = (f"{name} ({what} measure) over sessions {first} to {last}, {len(rows)} scores, "
                   f"{'higher' if better == 'higher' else 'lower'} is better. {totals}."
                   + (f" {len(marks)} alert markers." if marks else " No alerts."))
    return Chart(f"chart-{instrument}", instrument, kind, f"{name} by session", description, WIDTH,
                 int(bottom + BOTTOM), (PLOT_LEFT, top, PLOT_RIGHT, bottom), x_ticks, y_ticks, tuple(series),
                 tuple(guides), band, tuple(expected), tuple(boundary), tuple(marks), tuple(notes), better, labels)


def _lanes(marks: Sequence[tuple[float, str]]) -> list[int]:
    """A lane above the plot for each mark (in x order), the lowest whose last label ends before it
    starts, so no shape or word is drawn over another."""
    ends: list[float] = []
    found = []
    for x, label in marks:
        start, end = x - 7, x + 10 + LABEL_CHAR * len(label)
        lane = next((i for i, e in enumerate(ends) if e < start), len(ends))
        if lane == len(ends):
            ends.append(end)
        ends[lane] = end
        found.append(lane)
    return found


def _spread(wanted: Sequence[float], gap: float = 13.0) -> list[float]:
    """The right margin's labels moved apart just enough not to overlap, in the order they came."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = list(wanted)
    for previous, i in pairwise(order):
        placed[i] = max(placed[i], placed[previous] + gap)
    return [round(v, 2) for v in placed]


def _session_ticks(first: int, last: int) -> list[int]:
    span = last - first
    step = 1 if span <= 12 else 2 if span <= 24 else 5
    ticks = [s for s in range(first, last + 1) if s == first or s % step == 0]
    return ticks if last in ticks else [*ticks, last]


def shape_path(shape: str, x: float, y: float, r: float = 5.0) -> str:
    """An SVG path for a marker or point shape centred on (x, y)."""
    if shape == "square":
        return f"M{x - r:g},{y - r:g}h{2 * r:g}v{2 * r:g}h{-2 * r:g}Z"
    if shape == "diamond":
        return f"M{x:g},{y - r * 1.3:g}L{x + r * 1.3:g},{y:g}L{x:g},{y + r * 1.3:g}L{x - r * 1.3:g},{y:g}Z"
    if shape == "triangle":
        return f"M{x:g},{y - r * 1.2:g}L{x + r * 1.2:g},{y + r:g}L{x - r * 1.2:g},{y + r:g}Z"
    if shape == "cross":
        return (f"M{x - r:g},{y - r:g}L{x + r:g},{y + r:g}M{x + r:g},{y - r:g}L{x - r:g},{y + r:g}")
    # circle, as a path so every shape is drawn the same way
    return f"M{x - r:g},{y:g}a{r:g},{r:g} 0 1,0 {2 * r:g},0a{r:g},{r:g} 0 1,0 {-2 * r:g},0"
