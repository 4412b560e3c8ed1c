"""Which instrument a QuestionnaireResponse is, read from its items when its `questionnaire` is unknown.

Implementation guides publish PHQ-9 and GAD-7 under their own canonicals (MII PRO, PHR, CMS, ...), and many
of those are not in the registry; their linkIds, though, often say exactly what they are. Each answered
linkId is read against every registry instrument with the same conventions as a known instrument
(answers.ItemNames). A linkId is *evidence* for an instrument when it names that instrument's item
specifically: a LOINC item code, an `item.definition` ending in one, a registry alias, this tenant's linkId
map, or a positional name whose prefix names the instrument (`phq9-1`, `PHQ.1`, `PHQ-9.1`, `phq-gad7-q01`).
Anonymous positions (`q1`, `1`, `item_01`, `g1.q1`) fit every instrument with enough items and are evidence
for none: a local nine-question sleep form numbered q1..q9 is not a PHQ-9.

An instrument is an **exact** match when some linkId is evidence for it, every answered linkId (totals
aside) reads as one of its items, no item is named twice, and every scored item is there (unscored items,
such as PHQ-9 item 10, may be). Exactly one exact match is taken, with the warning `instrument_inferred`;
two are `ambiguous_instrument`, never guessed; none leaves `unknown_instrument`, naming the closest
candidates with what matched and what did not. Where one instrument's items are a subset of another's
(PHQ-2 in PHQ-9, GAD-2 in GAD-7) only the one whose item set equals the answered set is exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rapport.services.ingest.normalise.fhir.answers import MAX_DEPTH, POSITIONAL, ItemNames
from rapport.services.ingest.normalise.fhir.context import _objects
from rapport.services.ingest.normalise.outcome import TenantMapping
from rapport.services.ingest.normalise.reading import CODE_LIKE, shown_canonical
from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments import Instrument, Registry

# Reading more linkIds than any instrument has items tells nothing more; the bound keeps a hostile
# response of 80,000 items from costing 80,000 look-ups per instrument.
MAX_LINK_IDS = 200
SEPARATORS = "._-/:"
_QUESTION_WORD = re.compile(r"(?:^|[._\-/:])(?:qn|q|item|question|i)$", re.IGNORECASE)
_WORDS = re.compile(r"[^a-z0-9]+")


@dataclass
class Candidate:
    instrument: Instrument
    read: list[tuple[str, int, str]] = field(default_factory=list)  # (linkId, item number, how)
    unread: list[str] = field(default_factory=list)  # answered linkIds that are no item of it
    twice: list[int] = field(default_factory=list)  # items named by more than one linkId
    evidence: int = 0  # linkIds that name this instrument specifically

    @property
    def items(self) -> set[int]:
        return {number for _, number, _ in self.read}

    @property
    def missing(self) -> list[int]:
        return [i.number for i in self.instrument.scored_items if i.number not in self.items]

    @property
    def exact(self) -> bool:
        return self.evidence > 0 and not self.unread and not self.twice and not self.missing

    def summary(self) -> str:
        """`items 1-9 by LOINC code`: which items matched and by which conventions."""
        hows = sorted({how for _, _, how in self.read})
        return f"items {number_ranges(sorted(self.items))} by {' and '.join(hows)}" if self.read else "no items"

    def account(self) -> str:
        """What matched and what did not, in clinic IT's terms (codes and numbers only, never free text)."""
        parts = [f"{self.instrument.id}: {self.summary()}"]
        if self.read:
            parts.append(", ".join(f"{shown_link_id(link)}→{n}" for link, n, _ in self.read[:6])
                         + (", ..." if len(self.read) > 6 else ""))
        if self.missing:
            parts.append("no answer for items " + number_ranges(self.missing))
        if self.unread:
            more = ", ..." if len(self.unread) > 4 else ""
            parts.append(f"{len(self.unread)} answered linkIds not its items: "
                         + ", ".join(shown_link_id(u) for u in self.unread[:4]) + more)
        if self.twice:
            parts.append("items named twice: " + number_ranges(self.twice))
        return "; ".join(parts)


@dataclass(frozen=True)
class Inference:
    instrument: Instrument | None
    problems: list[Problem]  # a warning when an instrument was inferred; else why none was
    candidates: list[Candidate]


def infer(items: Any, registry: Registry, mapping: TenantMapping, canonical: str | None) -> Inference:
    asked = list(_answered_link_ids(items))
    named_by = _naming(registry)
    candidates = [_candidate(instrument, asked[:MAX_LINK_IDS], mapping, named_by) for instrument in registry]
    named = sorted((c for c in candidates if c.evidence),
                   key=lambda c: (-len(c.items), len(c.unread) + len(c.missing), c.instrument.id))
    exact = [c for c in named if c.exact]
    what = f"the questionnaire {shown_canonical(canonical)} is not one Rapport knows" if canonical \
        else "the response names no questionnaire"
    fix = "the questionnaire's canonical in this tenant's questionnaire map, or a canonical Rapport knows"
    if len(exact) == 1:
        [match] = exact
        known = match.instrument.coding.canonicals[:1]
        return Inference(match.instrument, [Problem(
            field="questionnaire", code="instrument_inferred",
            message=f"{what}; read as {match.instrument.id}, the one instrument its linkIds match exactly "
                    f"({match.summary()})",
            expected=f"to name it without inference: {known[0] if known else match.instrument.id} in "
                     "questionnaire, or this tenant's questionnaire map")], exact)
    if len(exact) > 1:
        both = " and ".join(c.instrument.id for c in exact[:3])
        return Inference(None, [
            Problem(field="questionnaire", code="ambiguous_instrument",
                    message=f"{what}, and its linkIds match every item of {both}: Rapport does not guess",
                    expected=fix),
            *(_candidate_problem(c) for c in exact[:3])], exact)
    if len(asked) > MAX_LINK_IDS:
        reason = f"it has more than {MAX_LINK_IDS} answered linkIds, more than any instrument has items"
    elif named:
        reason = "its linkIds match no instrument exactly; closest " + " and ".join(
            c.instrument.id for c in named[:2])
    else:
        reason = (f"none of its {len(asked)} answered linkIds names an item of an instrument (LOINC item codes, "
                  "item.definition, or positional names such as phq9-1; q1 alone names no instrument)")
    return Inference(None, [
        Problem(field="questionnaire", code="unknown_instrument", message=f"{what}, and {reason}", expected=fix),
        *(_candidate_problem(c) for c in named[:2])], named[:2])


def _candidate_problem(candidate: Candidate) -> Problem:
    instrument = candidate.instrument
    scored = number_ranges([i.number for i in instrument.scored_items])
    return Problem(field="item", code="instrument_candidate", message=candidate.account(),
                   expected=f"every scored item of {instrument.id} ({scored}) under linkIds that name it and no "
                            f"other answered linkIds, or this tenant's questionnaire map naming {instrument.id}")


def _answered_link_ids(items: Any, depth: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """(linkId, item) for every item that carries answers (or is a leaf), groups read through."""
    found: list[tuple[str, dict[str, Any]]] = []
    if depth >= MAX_DEPTH:
        return found
    for item in _objects(items):
        link_id = item.get("linkId")
        answers = _objects(item.get("answer"))
        group = isinstance(item.get("item"), list) and bool(item["item"]) and not answers
        if isinstance(link_id, str) and link_id and not group:
            found.append((link_id, item))
        found += _answered_link_ids(item.get("item"), depth + 1)
        for answer in answers:
            found += _answered_link_ids(answer.get("item"), depth + 1)
        if len(found) > MAX_LINK_IDS:
            break
    return found


def _candidate(instrument: Instrument, asked: list[tuple[str, dict[str, Any]]], mapping: TenantMapping,
               named_by: dict[str, set[str]]) -> Candidate:
    names = ItemNames(instrument, mapping)
    candidate = Candidate(instrument)
    seen: set[int] = set()
    for link_id, item in asked:
        if names.is_total(link_id, item):
            continue
        answered = bool(_objects(item.get("answer")))
        named = names.name(link_id, item)
        if named is not None and named.how == "position":
            prefix = _prefix_names(link_id, named_by)
            if prefix and instrument.id not in prefix:
                named = None  # `gad7-3` is no PHQ-9 item, whatever its position
            elif prefix:
                candidate.evidence += 1
        elif named is not None:
            candidate.evidence += 1
        if named is None:
            if answered:
                candidate.unread.append(link_id)
            continue
        if named.number in seen:
            candidate.twice.append(named.number)
            continue
        seen.add(named.number)
        candidate.read.append((link_id, named.number, named.how))
    return candidate


def _naming(registry: Registry) -> dict[str, set[str]]:
    """Word -> the instruments it names in a linkId prefix: the id (`phq9`) and its letters (`phq`)."""
    words: dict[str, set[str]] = {}
    for instrument in registry:
        for word in {instrument.id, instrument.id.rstrip("0123456789").rstrip("_")}:
            if len(word) >= 2:
                words.setdefault(word, set()).add(instrument.id)
    return words


def _prefix_names(link_id: str, named_by: dict[str, set[str]]) -> set[str]:
    """The instruments a positional linkId's prefix names: `PHQ-9.1` -> phq9 (and, through `phq`, phq2)."""
    match = POSITIONAL.fullmatch(link_id)
    if match is None:
        return set()
    head = _QUESTION_WORD.sub("", link_id[:match.start(1)].rstrip(SEPARATORS)).casefold()
    words = [w for w in _WORDS.split(head) if w]
    found: set[str] = set()
    for word in [*words, "".join(words)]:
        found |= named_by.get(word, set())
    return found


def shown_link_id(link_id: str) -> str:
    return repr(link_id) if CODE_LIKE.fullmatch(link_id) else "(linkId not shown)"


def number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
