"""NHS Talking Therapies (formerly IAPT) outcome definitions over a finished course of treatment.

Definitions: /work/shared/research/clinical-anchors.md §3.2. The inputs are the first and last paired
PHQ-9 and GAD-7 totals of a course (the cohort rule, at least two attended treatment appointments, is
the caller's business).

- caseness: PHQ-9 >= 10 or GAD-7 >= 8. Concept verified (R54); the numbers secondary (R56).
- recovery: a case at the start, and below caseness on both measures at the end. Verified (R55, R56).
- reliable improvement: PHQ-9 falls by 6 or more or GAD-7 by 4 or more, and neither measure reliably
  deteriorates. Thresholds secondary (R56); the combination rule UNVERIFIED.
- reliable deterioration: PHQ-9 rises by 6 or more or GAD-7 by 4 or more, and neither measure reliably
  improves. A secondary mirror of improvement (R56); the combination rule UNVERIFIED.
- reliable recovery: recovery and reliable improvement. Secondary (R57); the exact rule UNVERIFIED.

The combination rule (a reliable change on one measure counts only when the other does not move
reliably the opposite way) is the anchors' reading, not a quotation of the NHS Talking Therapies Manual
or the NHS Digital methodology: confirm it there before publishing rates. Under it improvement and
deterioration are mutually exclusive, and swapping first and last swaps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rapport.shared.contracts.score import ReliableChange


@dataclass(frozen=True)
class TalkingTherapiesRule:
    """The programme's thresholds. Fixed reliable-change values count at or beyond ("6 or more")."""

    phq9_caseness: float = 10  # R56 (IAPT Manual via secondary source); R54 concept
    gad7_caseness: float = 8  # R56
    phq9_reliable_change: float = 6  # R56
    gad7_reliable_change: float = 4  # R56
    sources: tuple[str, ...] = ("R54", "R55", "R56", "R57")
    combination_confidence: str = "unverified"


NHS_TALKING_THERAPIES = TalkingTherapiesRule()


@dataclass(frozen=True)
class TalkingTherapiesOutcome:
    """One client's course of treatment in NHS Talking Therapies terms.

    `recovered` and `reliably_recovered` are None when the client was not a case at the start: the
    programme measures recovery only among those who started at caseness.
    """

    case_at_start: bool
    case_at_end: bool
    phq9: ReliableChange
    gad7: ReliableChange
    reliable_improvement: bool
    reliable_deterioration: bool
    recovered: bool | None
    reliably_recovered: bool | None


def _movement(first: float, last: float, threshold: float) -> ReliableChange:
    fall = round(first - last, 6)
    if fall >= threshold:
        return "improved"
    if -fall >= threshold:
        return "deteriorated"
    return "none"


def nhs_talking_therapies(
    phq9_first: float,
    phq9_last: float,
    gad7_first: float,
    gad7_last: float,
    *,
    rule: TalkingTherapiesRule = NHS_TALKING_THERAPIES,
) -> TalkingTherapiesOutcome:
    """Caseness, recovery, reliable improvement / deterioration / recovery for one course."""
    case_at_start = phq9_first >= rule.phq9_caseness or gad7_first >= rule.gad7_caseness
    case_at_end = phq9_last >= rule.phq9_caseness or gad7_last >= rule.gad7_caseness
    phq9 = _movement(phq9_first, phq9_last, rule.phq9_reliable_change)
    gad7 = _movement(gad7_first, gad7_last, rule.gad7_reliable_change)
    moves = {phq9, gad7}
    improvement = "improved" in moves and "deteriorated" not in moves
    deterioration = "deteriorated" in moves and "improved" not in moves
    recovered = (not case_at_end) if case_at_start else None
    return TalkingTherapiesOutcome(
        case_at_start=case_at_start,
        case_at_end=case_at_end,
        phq9=phq9,
        gad7=gad7,
        reliable_improvement=improvement,
        reliable_deterioration=deterioration,
        recovered=recovered,
        reliably_recovered=None if recovered is None else recovered and improvement,
    )
