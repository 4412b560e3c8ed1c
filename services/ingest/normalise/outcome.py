"""What normalisation produces: a draft submission (or a rejection), finished by the registry checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import SourceFormat, Submission
from rapport.shared.instruments import Instrument, Registry
from rapport.shared.instruments.arithmetic import combine
from rapport.shared.instruments.validation import check_total, snap_responses

# A rejection is one event on the broker (1 MB at most) and one row for whoever reads it: the first
# MAX_PROBLEMS problems are named, the rest counted by code in one final `more_problems`. 80,000 bad
# response keys are one mistake made 80,000 times; the first fifty show it.
MAX_PROBLEMS = 50
MORE_PROBLEMS = "more_problems"
# No problem text grows with the payload (messages name fields, items, numbers and codes), but a field
# path can be as deep as the body: every text is cut to these lengths, whatever built the problem.
MAX_FIELD = 200
MAX_TEXT = 300


@dataclass(frozen=True)
class Rejection:
    submission_id: str | None  # the id the source gave, if readable
    source_format: SourceFormat | None
    problems: list[Problem]
    # The registry instrument id, when normalisation identified the instrument before finding the problems.
    # `finish` keeps it only if the registry has it: it labels metrics, so never free text from the input.
    instrument: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", bounded(self.problems))

    @classmethod
    def of(cls, *problems: Problem, submission_id: str | None = None,
           source_format: SourceFormat | None = None, instrument: str | None = None) -> Rejection:
        return cls(submission_id=submission_id, source_format=source_format, problems=list(problems),
                   instrument=instrument)


@dataclass(frozen=True)
class QuestionnaireMap:
    """One Questionnaire's structure as Rapport reads it: which instrument it is, which linkId is which item,
    and what each answer code of a linkId weighs. A published one (fhir/catalogue.py, from
    shared/instruments/questionnaires/) or a tenant's own, imported with `rapport questionnaires import`."""

    canonical: str  # without |version
    version: str | None  # None: any version of the canonical
    instrument: str
    link_ids: dict[str, int] = field(default_factory=dict)  # linkId -> item number
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # linkId -> {answer code -> weight}
    source: str = ""  # where it was read: a citation, or the tenant's import
    # linkId -> {an answer option's display, exactly as the Questionnaire has it -> its code}: how an answer
    # coding that carries only a display is read (answers.py), for this Questionnaire's items only
    displays: dict[str, dict[str, str]] = field(default_factory=dict)
    # linkIds of the Questionnaire's stated total (read as a stated total, compared and never scored), where
    # no convention names them (the SDC example's `H1/TS`)
    total_link_ids: tuple[str, ...] = ()


def canonical_key(canonical: str) -> str:
    """How canonicals are compared: without |version, trailing slash or case (as the registry compares them)."""
    return canonical.split("|", 1)[0].rstrip("/").lower()


def find_form(forms: Mapping[str, list[QuestionnaireMap]], reference: str) -> QuestionnaireMap | None:
    """The entry for `canonical|version`: that version's own, else one for any version of the canonical."""
    entries = forms.get(canonical_key(reference), [])
    version = reference.split("|", 1)[1] if "|" in reference else None
    return next((f for f in entries if version is not None and f.version == version), None) or next(
        (f for f in entries if f.version is None), None) or (entries[0] if entries and version is None else None)


@dataclass(frozen=True)
class TenantMapping:
    """Per-tenant configuration clinic IT provides for its own conventions (may be empty)."""

    questionnaires: dict[str, str] = field(default_factory=dict)  # canonical or identifier -> instrument id
    link_ids: dict[str, dict[str, int]] = field(default_factory=dict)  # instrument -> {linkId: item number}
    # This tenant's imported Questionnaires, by canonical_key; read before the published catalogue.
    forms: dict[str, list[QuestionnaireMap]] = field(default_factory=dict)
    # instrument -> linkIds that are the stated total, from the response's Questionnaire (QuestionnaireMap)
    total_link_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of_forms(cls, forms: list[QuestionnaireMap]) -> TenantMapping:
        grouped: dict[str, list[QuestionnaireMap]] = {}
        for form in forms:
            grouped.setdefault(canonical_key(form.canonical), []).append(form)
        return cls(forms=grouped)


@dataclass(frozen=True)
class StatedTotal:
    """A total the source stated beside item responses: never scored, only compared."""

    field: str
    value: float


@dataclass(frozen=True)
class Draft:
    submission: Submission
    stated_total: StatedTotal | None = None


def finish(draft: Draft | Rejection, registry: Registry, licensed: frozenset[str]) -> Submission | Rejection:
    """The checks every form shares: known instrument, licence, responses or total in range."""
    if isinstance(draft, Rejection):
        if draft.instrument is not None and draft.instrument not in registry:
            return replace(draft, instrument=None)
        return draft
    submission = draft.submission
    instrument = registry.get(submission.instrument)

    def reject(*problems: Problem) -> Rejection:
        return Rejection.of(*problems, submission_id=submission.submission_id,
                            source_format=submission.source_format,
                            instrument=instrument.id if instrument is not None else None)

    if instrument is None:
        return reject(Problem(
            field="instrument", code="unknown_instrument", message="the instrument is not one Rapport knows",
            expected="one of " + ", ".join(i.id for i in registry),
        ))
    if instrument.licence.status == "licensed" and instrument.id not in licensed:
        return reject(Problem(
            field="instrument", code="instrument_not_licensed",
            message=f"{instrument.id} is a licensed instrument this tenant has not enabled",
            expected="RAPPORT_LICENSED_INSTRUMENTS to list it for this tenant, with the holder's licence",
        ))
    if submission.item_level:
        # Kept as the exact step values (2.0000000001 is stored as 2), so scoring, hashes and
        # reports never see a sender's floating-point noise.
        responses, problems = snap_responses(instrument, submission.responses)
        if not problems:
            submission = submission.model_copy(update={"responses": responses})
    elif submission.reported_total is None:
        problems = [Problem(field="total", code="missing_total", message="no total and no item responses",
                            expected="responses for each item, or a total")]
    else:
        problems = check_total(instrument, submission.reported_total)
    if problems:
        return reject(*problems)
    if draft.stated_total is not None and submission.item_level:
        warning = stated_total_warning(instrument, submission.responses, draft.stated_total)
        if warning is not None:
            return submission.model_copy(update={"warnings": [*submission.warnings, warning]})
    return submission


def stated_total_warning(instrument: Instrument, responses: Mapping[int, float | None],
                         stated: StatedTotal) -> Problem | None:
    """A stated total is never scored. When every scored item is present the items' total is cheap to
    compute (shared.instruments.arithmetic, as scoring computes it), so a disagreeing total is named
    (`total_mismatch`); with items missing it cannot be compared (`stated_total_ignored`). The scoring
    service's score is the one that counts either way."""
    scored = instrument.scored_items
    combined = combine(instrument, scored, responses)
    if combined is None or combined[1]:
        return Problem(field=stated.field, code="stated_total_ignored",
                       message=f"the stated total {stated.value:g} is not used and, with items missing, "
                               "could not be compared; the score is computed from the items")
    computed = combined[0]
    if abs(computed - stated.value) <= 0.005:
        return None
    return Problem(field=stated.field, code="total_mismatch",
                   message=f"the stated total {stated.value:g} differs from the items' total {computed:g}; "
                           "the items' total is used",
                   expected=f"{computed:g}")


def bounded(problems: list[Problem]) -> list[Problem]:
    """At most MAX_PROBLEMS problems and one `more_problems` counting the rest; every text cut to length.
    Idempotent: a list already bounded (ending in `more_problems`) is returned as it is."""
    if len(problems) <= MAX_PROBLEMS + 1 and problems and problems[-1].code == MORE_PROBLEMS:
        return problems
    named = [_cut(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) <= MAX_PROBLEMS:
        return named
    rest = Counter(p.code for p in problems[MAX_PROBLEMS:])
    kinds = ", ".join(code for code, _ in rest.most_common(10)) + (", ..." if len(rest) > 10 else "")
    same = "of the same kinds" if rest.keys() <= {p.code for p in named} else "of the kinds"
    count = len(problems) - MAX_PROBLEMS
    return [*named, _cut(Problem(
        field="body", code=MORE_PROBLEMS,
        message=f"and {count:,} more problem{'s' if count > 1 else ''} {same}: {kinds}",
        expected="fix the problems named and send it again to see any that remain"))]


def _cut(problem: Problem) -> Problem:
    if len(problem.field) <= MAX_FIELD and len(problem.message) <= MAX_TEXT \
            and len(problem.expected or "") <= MAX_TEXT:
        return problem
    return problem.model_copy(update={
        "field": _shorter(problem.field, MAX_FIELD), "message": _shorter(problem.message, MAX_TEXT),
        "expected": None if problem.expected is None else _shorter(problem.expected, MAX_TEXT)})


def _shorter(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
