"""A labelled cohort a clinic brings to `rapport evaluate --cohort FILE`, and how each alert rule is
scored against its labels. Pure: reading the file and scoring alert events need no broker or database.

The file is JSON Lines, one JSON object per line (blank lines are skipped):

    {"format": "rapport-labelled-cohort/1", "description": "optional: where the cohort comes from"}
    {"submission": {<a native submission exactly as Rapport accepts it, with episode_id>}}
    {"label": {"alert_kind": "not_on_track", "client_id": "c-01", "episode_id": "c-01-e1", "session": 6,
               "note": "optional: why the clinician judged it alert-worthy"}}

- The first line names the format and version; a file of another version is refused.
- A `submission` line holds one native submission (README "Native JSON"): it is checked here as ingest
  would check it (same normaliser, same instrument registry) and then sent to the stack as it stands.
  In a cohort each submission names its `episode_id` (labels name episodes) and no `tenant` (the run
  uses a fresh tenant of its own); a `submission_id` appears once (amendments are not part of format 1).
- A `label` line says a clinician judged the episode alert-worthy for one alert kind (`critical_item`,
  `alliance_rupture`, `reliable_deterioration`, `not_on_track`), from a point given either as
  `session` (its session number) or as `at` (an ISO-8601 time with offset), not both. The episode must
  have submissions in the file. An episode with no label of a kind is taken as not alert-worthy for it.

Sessions: a submission's `session` where every submission of its episode gives one, else its rank by
`administered_at` within the episode (1, 2, ...).

Scoring, per rule (a rule counts as flagging an episode when its evidence is in any alert on that
episode, whichever rule raised the alert): precision = flagged episodes with a label of the rule's alert
kind / flagged episodes; recall = labelled episodes flagged / labelled episodes; lead time = the labelled
session minus the session of the rule's first evidence (in days for labels given by time), positive when
the rule spoke before the labelled point; alerts per 100 sessions = the distinct alerts holding the rule's
evidence per 100 sessions in the cohort (the alarm burden a clinician sees)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

from rapport.services.ingest.normalise.native import normalise_native
from rapport.services.ingest.normalise.outcome import Rejection
from rapport.shared.contracts.alert import AlertKind
from rapport.shared.instruments.registry import Registry, load_registry
from rapport.shared.instruments.validation import check_scorable

FORMAT = "rapport-labelled-cohort/1"
# attendance (disengagement) is not part of format 1
ALERT_KINDS: tuple[str, ...] = tuple(k for k in get_args(AlertKind) if k != "disengagement")
# each rule scored, and the alert kind whose labels it is scored against
RULE_KINDS = {
    "critical_item": "critical_item",
    "alliance_rupture": "alliance_rupture",
    "reliable_deterioration": "reliable_deterioration",
    "not_on_track": "not_on_track",  # the checkpoint rule
    "expected_trajectory": "not_on_track",
}
LABEL_FIELDS = {"alert_kind", "client_id", "episode_id", "session", "at", "note"}
CHECK_TENANT = "cohort"  # the submissions are checked as if sent for this tenant; the run uses its own


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.field}: {self.message}"


class CohortError(ValueError):
    """The file is not a labelled cohort Rapport can run: every problem found, by line and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"not a {FORMAT} file ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{shown}{more}")


@dataclass(frozen=True)
class CohortSubmission:
    line: int
    submission_id: str
    client_id: str
    episode_id: str
    administered_at: datetime
    session: int
    body: bytes  # the line's submission as it is sent


@dataclass(frozen=True)
class Label:
    line: int
    alert_kind: str
    client_id: str
    episode_id: str
    session: int | None = None
    at: datetime | None = None
    note: str | None = None


@dataclass
class LabelledCohort:
    submissions: list[CohortSubmission] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    description: str | None = None

    @property
    def sessions(self) -> int:
        """Distinct sessions (client, episode, session) in the cohort: the alarm burden's denominator."""
        return len({(s.client_id, s.episode_id, s.session) for s in self.submissions})

    def waves(self) -> list[list[CohortSubmission]]:
        """The submissions by session number, as a clinic's weeks would bring them: all session 1s, ..."""
        by_session: dict[int, list[CohortSubmission]] = {}
        for s in self.submissions:
            by_session.setdefault(s.session, []).append(s)
        return [sorted(by_session[n], key=lambda s: s.administered_at) for n in sorted(by_session)]

    def lines(self) -> list[str]:
        """The cohort as a file of this format (what `read_cohort` reads back)."""
        header: dict[str, Any] = {"format": FORMAT}
        if self.description:
            header["description"] = self.description
        out = [json.dumps(header)]
        out += [json.dumps({"submission": json.loads(s.body)}) for s in self.submissions]
        for label in self.labels:
            entry: dict[str, Any] = {"alert_kind": label.alert_kind, "client_id": label.client_id,
                                     "episode_id": label.episode_id}
            if label.session is not None:
                entry["session"] = label.session
            if label.at is not None:
                entry["at"] = label.at.isoformat()
            if label.note:
                entry["note"] = label.note
            out.append(json.dumps({"label": entry}))
        return out


def read_cohort(lines: Iterable[str], *, now: datetime, registry: Registry | None = None) -> LabelledCohort:
    """Every line checked before anything runs; CohortError lists each problem with its line and field."""
    registry = registry or load_registry()
    problems: list[Problem] = []
    cohort = LabelledCohort()
    raw: list[tuple[int, dict[str, Any], str, str, datetime, int | None]] = []
    labels: list[tuple[int, dict[str, Any]]] = []
    seen_ids: dict[str, int] = {}
    header_seen = False
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, "line", f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(number, "line", "each line is one JSON object"))
            continue
        if not header_seen:
            header_seen = True
            if entry.get("format") != FORMAT:
                problems.append(Problem(number, "format", f"the first line names the format: {{\"format\": "
                                                          f"\"{FORMAT}\"}}"))
                break  # another format or version: its other lines cannot be read as this one's
            extra = set(entry) - {"format", "description"}
            if extra:
                problems.append(Problem(number, sorted(extra)[0], "unknown field (the header has format and "
                                                                  "description)"))
            if isinstance(entry.get("description"), str):
                cohort.description = entry["description"]
            continue
        kinds = set(entry) & {"submission", "label"}
        if len(entry) != 1 or len(kinds) != 1:
            problems.append(Problem(number, "line", "each line after the first holds one key: submission or label"))
            continue
        if "label" in entry:
            if not isinstance(entry["label"], dict):
                problems.append(Problem(number, "label", "an object"))
            else:
                labels.append((number, entry["label"]))
            continue
        document = entry["submission"]
        if not isinstance(document, dict):
            problems.append(Problem(number, "submission", "an object: a native submission"))
            continue
        found = _submission_problems(document, now, registry)
        if found:
            problems += [Problem(number, f, m) for f, m in found]
            continue
        sid = document["submission_id"]
        if sid in seen_ids:
            problems.append(Problem(number, "submission.submission_id",
                                    f"also on line {seen_ids[sid]}: each submission once (no amendments in {FORMAT})"))
            continue
        seen_ids[sid] = number
        raw.append((number, document, document["client_id"], document["episode_id"],
                    datetime.fromisoformat(document["administered_at"]), document.get("session")))
    if not header_seen:
        problems.append(Problem(1, "format", f"empty file: the first line names the format {FORMAT}"))
    episodes = _sessions(raw)
    for number, document, client, episode, at, _ in raw:
        cohort.submissions.append(CohortSubmission(number, document["submission_id"], client, episode, at,
                                                   episodes[(client, episode)][document["submission_id"]],
                                                   json.dumps(document).encode()))
    known = {(client, episode) for client, episode in episodes}
    for number, entry in labels:
        label, label_problems = _label(number, entry, known)
        problems += label_problems
        if label:
            cohort.labels.append(label)
    if problems:
        raise CohortError(sorted(problems, key=lambda p: p.line))
    return cohort


def _submission_problems(document: dict[str, Any], now: datetime, registry: Registry) -> list[tuple[str, str]]:
    draft = normalise_native(document, CHECK_TENANT, now)
    if isinstance(draft, Rejection):
        return [(f"submission.{p.field}", p.message + (f" (expected {p.expected})" if p.expected else ""))
                for p in draft.problems]
    found: list[tuple[str, str]] = []
    submission = draft.submission
    instrument = registry.get(submission.instrument)
    if instrument is None:
        found.append(("submission.instrument", f"not an instrument of the registry (rapport instruments): "
                                               f"{', '.join(i.id for i in registry)}"))
    else:
        found += [(f"submission.{p.field}", p.message + (f" (expected {p.expected})" if p.expected else ""))
                  for p in check_scorable(instrument, submission.responses, item_level=submission.item_level,
                                          reported_total=submission.reported_total)]
    if submission.episode_id is None:
        found.append(("submission.episode_id", "required in a labelled cohort: labels name episodes"))
    if "tenant" in document:
        found.append(("submission.tenant", "leave it out: the evaluation runs under a tenant of its own"))
    return found


def _sessions(raw: list[tuple[int, dict[str, Any], str, str, datetime, int | None]]
              ) -> dict[tuple[str, str], dict[str, int]]:
    """(client, episode) -> submission id -> session: the given numbers where the whole episode gives
    them, else the rank of its administration times."""
    by_episode: dict[tuple[str, str], list[tuple[datetime, str, int | None]]] = {}
    for _, document, client, episode, at, session in raw:
        by_episode.setdefault((client, episode), []).append((at, document["submission_id"], session))
    out: dict[tuple[str, str], dict[str, int]] = {}
    for key, entries in by_episode.items():
        if all(session is not None for _, _, session in entries):
            out[key] = {sid: int(session) for _, sid, session in entries if session is not None}
        else:
            times = sorted({at for at, _, _ in entries})
            out[key] = {sid: times.index(at) + 1 for at, sid, _ in entries}
    return out


def _label(number: int, entry: dict[str, Any], known: set[tuple[str, str]]) -> tuple[Label | None, list[Problem]]:
    problems = [Problem(number, f"label.{name}", "unknown field (a label has " + ", ".join(sorted(LABEL_FIELDS)) + ")")
                for name in sorted(set(entry) - LABEL_FIELDS)]
    kind = entry.get("alert_kind")
    if kind not in ALERT_KINDS:
        problems.append(Problem(number, "label.alert_kind", f"one of {', '.join(ALERT_KINDS)}"))
    for name in ("client_id", "episode_id"):
        if not isinstance(entry.get(name), str) or not entry[name]:
            problems.append(Problem(number, f"label.{name}", "required, a string"))
    session, at = entry.get("session"), entry.get("at")
    when: datetime | None = None
    if (session is None) == (at is None):
        problems.append(Problem(number, "label.session", "give the labelled point as session or as at, one of them"))
    elif session is not None and (not isinstance(session, int) or isinstance(session, bool) or session < 0):
        problems.append(Problem(number, "label.session", "a whole number of 0 or more"))
    elif at is not None:
        try:
            when = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            problems.append(Problem(number, "label.at", "an ISO-8601 time with its UTC offset, e.g. "
                                                        "2026-03-02T10:00:00+00:00"))
    if "note" in entry and not isinstance(entry["note"], str):
        problems.append(Problem(number, "label.note", "a string"))
    if not problems and (entry["client_id"], entry["episode_id"]) not in known:
        problems.append(Problem(number, "label.episode_id", "no submission in the file has this client and episode"))
    if problems:
        return None, problems
    return Label(number, str(kind), entry["client_id"], entry["episode_id"], session, when, entry.get("note")), []


@dataclass(frozen=True)
class RuleScore:
    rule: str
    kind: str
    labelled: int  # episodes labelled alert-worthy for the rule's kind
    flagged: int  # episodes where the rule's evidence is in an alert
    true_positives: int
    precision: float | None  # None: the rule flagged nothing
    recall: float | None  # None: nothing labelled
    median_lead_sessions: float | None  # labelled session - first flagged session; positive: earlier
    median_lead_days: float | None  # for labels given by time
    alerts: int  # distinct alerts holding the rule's evidence
    alerts_per_100_sessions: float
    # flagged episodes with no label of the kind, by the opening words of the rule's first evidence there
    # ("Possible sudden loss", "Reliable deterioration"): what the false alarms said
    unlabelled_by_finding: dict[str, int] = field(default_factory=dict)


def score_against_labels(cohort: LabelledCohort, alert_events: Iterable[Mapping[str, Any]]) -> dict[str, RuleScore]:
    """Each rule against the cohort's labels, from the alert events the run produced (pure)."""
    where = {s.submission_id: s for s in cohort.submissions}
    episodes = {(s.client_id, s.episode_id) for s in cohort.submissions}
    first: dict[tuple[str, str, str], CohortSubmission] = {}  # (rule, client, episode) -> first evidence's submission
    finding: dict[tuple[str, str, str], str] = {}  # the same -> the opening words of that evidence
    alerts: dict[str, set[str]] = {}
    for event in alert_events:
        alert = event["data"]["alert"]
        episode = (alert["client_id"], alert["episode_id"])
        if episode not in episodes:
            continue
        for found in alert["evidence"]:
            submission = where.get(found["submission_id"])
            if submission is None:
                continue
            key = (found["rule_id"], *episode)
            if key not in first or submission.administered_at < first[key].administered_at:
                first[key] = submission
                finding[key] = _title(str(found.get("summary", "")))
            alerts.setdefault(found["rule_id"], set()).add(alert["alert_id"])
    labels: dict[str, dict[tuple[str, str], Label]] = {}
    for label in cohort.labels:  # the earliest label of a kind per episode
        mine = labels.setdefault(label.alert_kind, {})
        labelled = (label.client_id, label.episode_id)
        if labelled not in mine or _earlier(label, mine[labelled]):
            mine[labelled] = label
    sessions = cohort.sessions
    scores = {}
    for rule, kind in RULE_KINDS.items():
        truth = labels.get(kind, {})
        flagged = {(c, e): s for (r, c, e), s in first.items() if r == rule}
        hits = [k for k in flagged if k in truth]
        lead_sessions = [point - flagged[k].session for k in hits if (point := truth[k].session) is not None]
        lead_days = [(at - flagged[k].administered_at).total_seconds() / 86400
                     for k in hits if (at := truth[k].at) is not None]
        count = len(alerts.get(rule, ()))
        unlabelled: dict[str, int] = {}
        for k in flagged:
            if k not in truth:
                unlabelled[finding[(rule, *k)]] = unlabelled.get(finding[(rule, *k)], 0) + 1
        scores[rule] = RuleScore(
            rule=rule, kind=kind, labelled=len(truth), flagged=len(flagged), true_positives=len(hits),
            precision=round(len(hits) / len(flagged), 3) if flagged else None,
            recall=round(len(hits) / len(truth), 3) if truth else None,
            median_lead_sessions=statistics.median(lead_sessions) if lead_sessions else None,
            median_lead_days=round(statistics.median(lead_days), 1) if lead_days else None,
            alerts=count, alerts_per_100_sessions=round(100 * count / sessions, 2) if sessions else 0.0,
            unlabelled_by_finding=dict(sorted(unlabelled.items())),
        )
    return scores


def _earlier(label: Label, than: Label) -> bool:
    """Of two labels of one kind on one episode, the earlier point counts; by session or by time, when
    both give the same; else the one first in the file."""
    if label.session is not None and than.session is not None:
        return label.session < than.session
    if label.at is not None and than.at is not None:
        return label.at < than.at
    return False


def alerts_per_100_sessions(cohort: LabelledCohort, alert_events: Iterable[Mapping[str, Any]]) -> float:
    """Every distinct alert on the cohort's episodes, whatever rule raised it, per 100 sessions."""
    episodes = {(s.client_id, s.episode_id) for s in cohort.submissions}
    alerts = {e["data"]["alert"]["alert_id"] for e in alert_events
              if (e["data"]["alert"]["client_id"], e["data"]["alert"]["episode_id"]) in episodes}
    return round(100 * len(alerts) / cohort.sessions, 2) if cohort.sessions else 0.0


def _title(summary: str) -> str:
    """"Possible sudden loss on CORE-10: 14, +7 since last session" -> "Possible sudden loss"."""
    head = summary.split(":")[0].split(" at session ")[0]
    return (head.rsplit(" on ", 1)[0] if " on " in head else head) or "-"
