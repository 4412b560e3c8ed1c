"""Published Questionnaires Rapport knows without configuration, and a tenant's own read from its FHIR resource.

**The catalogue** is data with sources: one TOML file per published Questionnaire in
shared/instruments/questionnaires/ (canonical, the instrument, linkId -> item, linkId -> answer code ->
weight, the citation of the file it was read from, and `confidence`: `verified` when read from the
Questionnaire itself, `unverified` otherwise). A response whose `questionnaire` is a catalogued canonical
(with or without `|version`) is read with that entry's linkIds and weights first, then the usual
conventions (fhir/__init__.py), so no tenant needs to configure it. Each entry is checked against the
registry when loaded: a linkId naming no item, or a weight outside its item's range, stops the load.

**A tenant's Questionnaire** (`rapport questionnaires import`) is read into the same shape by
`read_questionnaire`: the instrument from the Questionnaire's `code` (a LOINC panel code) or `url`, or
as the operator names it; each question's item from its `code` or `definition` (an item's LOINC code),
then its linkId by the usual conventions, then its `prefix` when that is the item's number; each answer
option's weight from its itemWeight or ordinalValue extension (on the coding, then the option), else the
registry's LOINC answer codes for that item. Anything that cannot be tied to an item or weighed is a
problem naming the item by its index and linkId, and nothing is stored.
"""

from __future__ import annotations

import math
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rapport.services.ingest.normalise.fhir.answers import ItemNames, _questionnaire_items, _weight
from rapport.services.ingest.normalise.fhir.context import LOINC_CODE, _objects
from rapport.services.ingest.normalise.outcome import QuestionnaireMap, TenantMapping, canonical_key
from rapport.services.ingest.normalise.reading import shown, shown_canonical
from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments import Instrument, Registry, load_registry
from rapport.shared.instruments.registry import DEFINITIONS

CATALOGUE = DEFINITIONS.parent / "questionnaires"  # beside the instrument definitions, shipped with them
MAX_CANONICAL = 1024  # the stored column's length; canonicals are URLs, far shorter in practice
MAX_VERSION = 64
QUESTION_TYPES = frozenset({"choice", "coding", "open-choice", "integer", "decimal", "quantity", "string"})


class CatalogueSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    citation: str
    url: str | None = None


class CatalogueEntry(BaseModel):
    """One file of shared/instruments/questionnaires/."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9-]{2,64}$")
    canonical: str = Field(min_length=1, max_length=MAX_CANONICAL)
    version: str | None = Field(default=None, max_length=MAX_VERSION)
    instrument: str
    confidence: Literal["verified", "unverified"]
    note: str | None = None
    source: CatalogueSource
    link_ids: dict[str, int] = Field(min_length=1)
    weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    # answer code -> the display its answerOptions give it, as published: an answer coding with only a
    # display is read as the code whose display it is, exactly (never fuzzy), on the linkIds that offer it
    answer_displays: dict[str, str] = Field(default_factory=dict)
    # linkIds of the Questionnaire's calculated total that no convention recognises (read as a stated total)
    total_link_ids: list[str] = Field(default_factory=list)

    def form(self, registry: Registry | None = None) -> QuestionnaireMap:
        """The entry as ingest reads it. The answer displays go to the linkIds whose weights name the code,
        else to every scored item's linkId (an unscored item, such as PHQ-9's difficulty item, offers other
        answers)."""
        instrument = (registry or load_registry()).get(self.instrument)
        displays: dict[str, dict[str, str]] = {}
        for link_id, number in self.link_ids.items():
            item = instrument.item(number) if instrument is not None else None
            offered = self.weights.get(link_id) or (self.answer_displays if item is not None and item.scored else {})
            shown = {self.answer_displays[c]: c for c in offered if c in self.answer_displays}
            if shown:
                displays[link_id] = shown
        return QuestionnaireMap(canonical=self.canonical, version=self.version, instrument=self.instrument,
                                link_ids=dict(self.link_ids), weights={k: dict(v) for k, v in self.weights.items()},
                                source=self.source.citation, displays=displays,
                                total_link_ids=tuple(self.total_link_ids))


def load_entries(directory: Path = CATALOGUE, registry: Registry | None = None) -> list[CatalogueEntry]:
    registry = registry or load_registry()
    entries = []
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as f:
            try:
                entry = CatalogueEntry.model_validate(tomllib.load(f))
            except ValueError as exc:
                raise ValueError(f"{path.name}: {exc}") from exc
        if problems := check_form(entry.form(registry), registry):
            raise ValueError(f"{path.name}: " + "; ".join(p.message for p in problems))
        if overlap := set(entry.total_link_ids) & set(entry.link_ids):
            raise ValueError(f"{path.name}: {sorted(overlap)} are both items and the total")
        if len(set(entry.answer_displays.values())) != len(entry.answer_displays):
            raise ValueError(f"{path.name}: two answer codes share a display, so a display alone names neither")
        entries.append(entry)
    if len({canonical_key(e.canonical) + "|" + (e.version or "") for e in entries}) != len(entries):
        raise ValueError("two catalogue entries share a canonical and version")
    return entries


@lru_cache(maxsize=1)
def published() -> TenantMapping:
    """The catalogue as forms by canonical, loaded once per process."""
    return TenantMapping.of_forms([e.form() for e in load_entries()])


def check_form(form: QuestionnaireMap, registry: Registry) -> list[Problem]:
    """Whether every linkId names an item of the form's instrument and every weight is in its item's range."""
    instrument = registry.get(form.instrument)
    if instrument is None:
        return [Problem(field="instrument", code="unknown_instrument",
                        message=f"{shown(form.instrument)} is not an instrument Rapport has",
                        expected="one of " + ", ".join(i.id for i in registry))]
    problems = []
    for link_id, number in form.link_ids.items():
        if instrument.item(number) is None:
            problems.append(Problem(field=f"link_ids.{link_id}", code="unknown_item",
                                    message=f"linkId {shown(link_id)} names item {number}, which {instrument.id} "
                                            "has not",
                                    expected=f"an item number 1-{len(instrument.items)}"))
    for link_id, codes in form.weights.items():
        mapped = form.link_ids.get(link_id)
        item = instrument.item(mapped) if mapped is not None else None
        if item is None:
            problems.append(Problem(field=f"weights.{link_id}", code="unmapped_link_id",
                                    message=f"weights are given for linkId {shown(link_id)}, which names no item",
                                    expected="weights only for linkIds in link_ids"))
            continue
        for code, weight in codes.items():
            if not (math.isfinite(weight) and item.min <= weight <= item.max):
                problems.append(Problem(field=f"weights.{link_id}.{code}", code="out_of_range",
                                        message=f"answer {shown(code)} of item {mapped} weighs {weight:g}",
                                        expected=f"{item.min:g}-{item.max:g}, the item's range"))
    return problems


def read_questionnaire(resource: Any, registry: Registry,
                       instrument_id: str | None = None) -> QuestionnaireMap | list[Problem]:
    """A tenant's own Questionnaire resource as a QuestionnaireMap, or every problem that stops it."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Questionnaire":
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        return [Problem(field="resourceType", code="not_a_questionnaire",
                        message=f"resourceType is {shown(kind)}", expected="a FHIR R4 Questionnaire")]
    problems: list[Problem] = []
    url, version = resource.get("url"), resource.get("version")
    if not isinstance(url, str) or not url.strip():
        problems.append(Problem(field="url", code="missing_field", message="the Questionnaire has no url",
                                expected="its canonical url, which its responses name in `questionnaire`"))
    elif len(url) > MAX_CANONICAL or "|" in url:
        problems.append(Problem(field="url", code="invalid_fhir", message="url is longer than Rapport keeps or holds |",
                                expected=f"a canonical url of at most {MAX_CANONICAL} characters, without |version"))
    if version is not None and (not isinstance(version, str) or not version or len(version) > MAX_VERSION):
        problems.append(Problem(field="version", code="invalid_fhir", message="version is not a short string",
                                expected=f"a string of at most {MAX_VERSION} characters"))
        version = None
    instrument = _instrument(resource, registry, instrument_id, problems)
    if instrument is None:
        return problems
    link_ids: dict[str, int] = {}
    weights: dict[str, dict[str, float]] = {}
    displays: dict[str, dict[str, str]] = {}
    totals: list[str] = []
    names = ItemNames(instrument, TenantMapping())
    seen: dict[int, str] = {}
    for n, item in enumerate(_questionnaire_items(resource.get("item"))):
        link_id, kind = item.get("linkId"), item.get("type")
        here = f"item[{n}]" + (f" (linkId {shown(link_id)})" if isinstance(link_id, str) else "")
        if isinstance(link_id, str) and kind in QUESTION_TYPES and _coded_as_total(item, instrument):
            totals.append(link_id)  # the calculated total, by its LOINC code: read as a stated total
            continue
        if kind not in QUESTION_TYPES or not isinstance(link_id, str) or names.is_total(link_id, item):
            continue  # groups, display text, the calculated total: not items to score
        number = _item_number(item, link_id, instrument, names)
        if number is None:
            problems.append(Problem(
                field=f"{here}", code="unmapped_item",
                message=f"{here} cannot be tied to an item of {instrument.id}: its code, definition, linkId and "
                        "prefix name none",
                expected=f"item.code with the item's LOINC code, or a linkId such as {names.what_works()}"))
            continue
        if number in seen:
            problems.append(Problem(field=here, code="duplicate_item",
                                    message=f"{here} and {seen[number]} are both {instrument.id} item {number}",
                                    expected="each item once"))
            continue
        seen[number] = here
        link_ids[link_id] = number
        item_weights = _option_weights(item, here, instrument, number, problems)
        if item_weights:
            weights[link_id] = item_weights
        if item_displays := _option_displays(item):
            displays[link_id] = item_displays
    if missing := [i.number for i in instrument.scored_items if i.number not in seen]:
        problems.append(Problem(field="item", code="missing_item",
                                message=f"no item of the Questionnaire is {instrument.id} item "
                                        + ", ".join(map(str, missing)),
                                expected=f"every scored item of {instrument.id}"))
    if problems:
        return problems
    assert isinstance(url, str)
    form = QuestionnaireMap(canonical=url.strip(), version=version, instrument=instrument.id, link_ids=link_ids,
                            weights=weights, source="imported Questionnaire", displays=displays,
                            total_link_ids=tuple(totals))
    return check_form(form, registry) or form


def _instrument(resource: dict[str, Any], registry: Registry, instrument_id: str | None,
                problems: list[Problem]) -> Instrument | None:
    if instrument_id is not None:
        found = registry.get(instrument_id)
        if found is None:
            problems.append(Problem(field="--instrument", code="unknown_instrument",
                                    message=f"{shown(instrument_id)} is not an instrument Rapport has",
                                    expected="one of " + ", ".join(i.id for i in registry)))
        return found
    keys = [c["code"] for c in _objects(resource.get("code")) if isinstance(c.get("code"), str)]
    if isinstance(resource.get("url"), str):
        keys.append(resource["url"])
    for key in keys:
        if (found := registry.by_questionnaire(key)) is not None:
            return found
    url = resource.get("url")
    problems.append(Problem(
        field="code", code="unknown_instrument",
        message=f"the Questionnaire {shown_canonical(url) if isinstance(url, str) else ''} names no instrument "
                "Rapport has in code or url".replace("  ", " "),
        expected="code with the instrument's LOINC panel code (PHQ-9 44249-1, GAD-7 69737-5), or --instrument"))
    return None


def _item_number(item: dict[str, Any], link_id: str, instrument: Instrument, names: ItemNames) -> int | None:
    by_loinc = {i.loinc: i.number for i in instrument.items if i.loinc}
    for coding in _objects(item.get("code")):
        if (number := by_loinc.get(coding.get("code"))) is not None:  # type: ignore[arg-type]
            return number
    named = names.name(link_id, item)
    if named is not None:
        return named.number
    prefix = item.get("prefix")
    if isinstance(prefix, str) and prefix.strip().rstrip(".").isdigit() and not LOINC_CODE.fullmatch(link_id):
        number = int(prefix.strip().rstrip("."))
        return number if instrument.item(number) is not None else None
    return None


def _option_weights(item: dict[str, Any], here: str, instrument: Instrument, number: int,
                    problems: list[Problem]) -> dict[str, float]:
    definition = instrument.item(number)
    assert definition is not None
    known = instrument.coding.weights_for(number)
    weights: dict[str, float] = {}
    for k, option in enumerate(_objects(item.get("answerOption"))):
        coding = option.get("valueCoding")
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            continue  # valueInteger / valueString options are read as numbers
        code = coding["code"]
        weight = _weight(coding)
        weight = weight if weight is not None else _weight(option)
        if weight is None:
            weight = known.get(code)
        if weight is None:
            if definition.scored:
                problems.append(Problem(
                    field=f"{here}.answerOption[{k}]", code="unweighed_answer",
                    message=f"answer {shown(code)} of {instrument.id} item {number} has no weight",
                    expected="an itemWeight or ordinalValue extension on the answerOption or its coding"))
            continue
        if not (math.isfinite(weight) and definition.min <= weight <= definition.max):
            problems.append(Problem(field=f"{here}.answerOption[{k}]", code="out_of_range",
                                    message=f"answer {shown(code)} of {instrument.id} item {number} weighs "
                                            f"{weight:g}" if math.isfinite(weight) else "a weight that is no number",
                                    expected=f"{definition.min:g}-{definition.max:g}, the item's range"))
            continue
        weights[code] = weight
    return weights


def _option_displays(item: dict[str, Any]) -> dict[str, str]:
    """display -> code of an item's coded answerOptions. A display two options share names neither, so it
    is left out (an answer with only that display is refused, saying so)."""
    found: dict[str, list[str]] = {}
    for option in _objects(item.get("answerOption")):
        coding = option.get("valueCoding")
        if isinstance(coding, dict) and isinstance(coding.get("code"), str) and isinstance(coding.get("display"), str):
            found.setdefault(coding["display"], []).append(coding["code"])
    return {display: codes[0] for display, codes in found.items() if len(set(codes)) == 1}


def _coded_as_total(item: dict[str, Any], instrument: Instrument) -> bool:
    total = instrument.coding.loinc_total
    return bool(total) and any(c.get("code") == total for c in _objects(item.get("code")))
