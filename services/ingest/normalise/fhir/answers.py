"""A QuestionnaireResponse's items and answers: linkId to item number, and each answer weighed to a value."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rapport.services.ingest.normalise.fhir.context import LOINC_CODE, _objects
from rapport.services.ingest.normalise.outcome import StatedTotal, TenantMapping
from rapport.services.ingest.normalise.reading import CODE_LIKE, finite_number, shown
from rapport.shared.contracts.problems import Problem
from rapport.shared.instruments import Instrument

ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
MAX_DEPTH = 10
POSITIONAL = re.compile(r"^(?:.*[._\-/:])?(?:q|qn|item|question|i)?[._\-]?(\d{1,3})$", re.IGNORECASE)
TOTAL_NAME = re.compile(r"total|score|(?:^|[^a-z])sum(?:[^a-z]|$)", re.IGNORECASE)
NUMERIC = re.compile(r"^\s*[+-]?\d{1,6}(?:\.\d{1,6})?\s*$")
ANSWER_TYPES = ("valueBoolean", "valueDate", "valueDateTime", "valueTime", "valueUri", "valueAttachment",
                "valueReference")


def _extensions(holder: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Extensions are optional annotations: malformed ones are skipped, not fatal."""
    extensions = holder.get("extension")
    if extensions and isinstance(extensions, list):
        yield from (e for e in extensions if isinstance(e, dict))


def _declined(holder: dict[str, Any]) -> bool:
    return "extension" in holder and any(e.get("url") == DATA_ABSENT for e in _extensions(holder))


def _weight(holder: dict[str, Any]) -> float | None:
    """The itemWeight (or ordinalValue) of a coding, answer or answerOption; None without one. NaN when
    the extension states a value that is not a finite number (`1e309`, a string): the answer is then
    refused, never weighed some other way as if the sender had stated no weight."""
    if "extension" not in holder:
        return None
    for ext in _extensions(holder):
        if ext.get("url") in (ITEM_WEIGHT, ORDINAL_VALUE):
            for key in ("valueDecimal", "valueInteger"):
                if key in ext:
                    number = finite_number(ext[key])
                    return math.nan if number is None else number
    return None


def _questionnaire_items(items: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > MAX_DEPTH:
        return
    for item in _objects(items):
        yield item
        yield from _questionnaire_items(item.get("item"), depth + 1)


def _option_weights(definitions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """linkId -> {answer code -> weight} from Questionnaire answerOptions (itemWeight, ordinalValue)."""
    weights: dict[str, dict[str, float]] = {}
    for questionnaire in definitions:
        for item in _questionnaire_items(questionnaire.get("item")):
            link_id = item.get("linkId")
            for option in _objects(item.get("answerOption")):
                coding = option.get("valueCoding")
                if isinstance(link_id, str) and isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    weight = _weight(coding)
                    weight = weight if weight is not None else _weight(option)
                    if weight is not None:
                        weights.setdefault(link_id, {}).setdefault(coding["code"], weight)
    return weights


@dataclass(frozen=True)
class Named:
    """How a linkId was read as an item: `how` says by which convention, for explanations."""

    number: int
    how: str  # "tenant map", "LOINC code", "definition", "alias", "position"


class ItemNames:
    """linkId -> item number for one instrument, by the conventions in order (fhir/__init__.py). The one place
    the conventions live: the response reader and instrument inference both ask it."""

    def __init__(self, instrument: Instrument, mapping: TenantMapping) -> None:
        self.instrument = instrument
        self.configured = mapping.link_ids.get(instrument.id, {})
        self.by_loinc = {i.loinc: i.number for i in instrument.items if i.loinc}
        self.by_alias = {a.casefold(): i.number for i in instrument.items for a in i.aliases}
        self.total_code = instrument.coding.loinc_total
        self.total_link_ids = frozenset(mapping.total_link_ids.get(instrument.id, ()))

    def is_total(self, link_id: str, item: dict[str, Any]) -> bool:
        if link_id in self.total_link_ids:
            return True
        if self.total_code and self.total_code in (_last_segment(link_id), _last_segment(item.get("definition"))):
            return True
        return bool(TOTAL_NAME.search(link_id))

    def name(self, link_id: str, item: dict[str, Any]) -> Named | None:
        """The item a (non-total) linkId names, or None."""
        if (number := self.configured.get(link_id)) is not None:
            return Named(number, "tenant map")
        code = _last_segment(link_id)
        if (number := self.by_loinc.get(code)) is not None:
            return Named(number, "LOINC code")
        if (number := self.by_loinc.get(_last_segment(item.get("definition")))) is not None:
            return Named(number, "definition")
        if (number := self.by_alias.get(link_id.casefold())) is not None:
            return Named(number, "alias")
        if LOINC_CODE.fullmatch(code):
            return None  # the LOINC code of something else: never read as a position
        match = POSITIONAL.fullmatch(link_id)
        if match:
            number = int(match.group(1))
            return Named(number, "position") if 1 <= number <= len(self.instrument.items) else None
        return None

    def what_works(self) -> str:
        """What clinic IT can send instead, in its own terms."""
        instrument = self.instrument
        coded = [i for i in instrument.items if i.loinc]
        loinc = f"LOINC item codes ({coded[0].loinc} for item {coded[0].number} ... {coded[-1].loinc} for item " \
                f"{coded[-1].number}), " if coded else ""
        return (f"{loinc}positional names (q1, {instrument.id}-1 ... {instrument.id}-{len(instrument.items)}), "
                f"or this linkId in this tenant's linkId map for {instrument.id}")


class _Responses:
    """Walks a QuestionnaireResponse's items into item number -> value, collecting every problem."""

    def __init__(self, instrument: Instrument, mapping: TenantMapping,
                 option_weights: dict[str, dict[str, float]],
                 displays: dict[str, dict[str, str]] | None = None) -> None:
        self.instrument = instrument
        self.names = ItemNames(instrument, mapping)
        self.option_weights = option_weights
        self.displays = displays or {}  # linkId -> {display -> code}: the catalogued or imported Questionnaire's
        self.read: list[tuple[str, int]] = []  # (linkId, item number) in the order read, for explanations
        self.unread: list[str] = []  # answered linkIds that are no item of the instrument
        self.responses: dict[int, float | None] = {}
        self.where: dict[int, str] = {}
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.stated_total: StatedTotal | None = None

    def walk(self, items: Any, path: str, depth: int) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            self.problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} is not a list",
                                         expected="a list of items"))
            return
        if depth >= MAX_DEPTH:
            self.problems.append(Problem(field=path, code="invalid_fhir",
                                         message=f"items are nested more than {MAX_DEPTH} levels deep"))
            return
        for n, item in enumerate(items):
            here = f"{path}[{n}]"
            if not isinstance(item, dict):
                self.problems.append(Problem(field=here, code="invalid_fhir", message=f"{here} is not an object"))
                continue
            answers = item.get("answer")
            if answers is not None and not isinstance(answers, list):
                self.problems.append(Problem(field=f"{here}.answer", code="invalid_fhir",
                                             message=f"{here}.answer is not a list", expected="a list of answers"))
                continue
            answers = answers or []
            bad = [a for a, answer in enumerate(answers) if not isinstance(answer, dict)]
            for a in bad:
                self.problems.append(Problem(field=f"{here}.answer[{a}]", code="invalid_fhir",
                                             message=f"{here}.answer[{a}] is not an object"))
            link_id = item.get("linkId")
            if not isinstance(link_id, str) or not link_id:
                self.problems.append(Problem(field=f"{here}.linkId",
                                             code="missing_field" if link_id is None else "invalid_fhir",
                                             message=f"{here} has no linkId string", expected="a linkId"))
            elif not bad:
                self._item(here, item, link_id, answers)
            if "item" in item:
                self.walk(item["item"], f"{here}.item", depth + 1)
            for a, answer in enumerate(answers):
                if isinstance(answer, dict) and "item" in answer:
                    self.walk(answer["item"], f"{here}.answer[{a}].item", depth + 1)

    def _item(self, here: str, item: dict[str, Any], link_id: str, answers: list[dict[str, Any]]) -> None:
        instrument = self.instrument
        number = self.names.configured.get(link_id)
        if number is None:
            if self.names.is_total(link_id, item):
                if answers and self.stated_total is None:
                    scratch: list[Problem] = []  # an unreadable stated total is as good as none
                    value = self._value(answers[0], f"{here}.answer[0]", link_id, 0, scratch)
                    if value is not None and not scratch:
                        self.stated_total = StatedTotal(f"{here}.answer[0]", value)
                return
            if isinstance(item.get("item"), list) and item["item"] and not answers:
                return  # a group: its sub-items are read
            named = self.names.name(link_id, item)
            number = named.number if named is not None else None
        if number is None:
            if answers:
                self.unread.append(link_id)
                self.problems.append(Problem(
                    field=f"{here}.linkId", code="unmapped_link_id",
                    message=f"linkId {shown(link_id)} is not an item of {instrument.id}",
                    expected=self.names.what_works()))
            return
        self.read.append((link_id, number))
        if number in self.where:
            self.problems.append(Problem(
                field=f"{here}.linkId", code="duplicate_item",
                message=f"{instrument.id} item {number} is answered twice ({self.where[number]} and {here})",
                expected="each item once"))
            return
        self.where[number] = here
        if not answers:
            self.responses[number] = None  # asked and declined (data-absent-reason) or left blank
            return
        if len(answers) > 1:
            self.problems.append(Problem(field=f"{here}.answer", code="several_answers",
                                         message=f"{instrument.id} item {number} has {len(answers)} answers",
                                         expected="one answer"))
            return
        problems: list[Problem] = []
        value = self._value(answers[0], f"{here}.answer[0]", link_id, number, problems)
        definition = instrument.item(number)
        if problems and definition is not None and not definition.scored:
            self.warnings.append(Problem(
                field=f"{here}.answer[0]", code="unscored_item_ignored",
                message=f"{instrument.id} item {number} is not scored and its answer could not be weighed; "
                        "it is left out"))
            return
        self.problems += problems
        if not problems:
            self.responses[number] = value

    def _value(self, answer: dict[str, Any], path: str, link_id: str, number: int,
               problems: list[Problem]) -> float | None:
        if _declined(answer):
            return None
        keys = [k for k in answer if k.startswith("value")]
        if not keys:
            return None  # an answer with no value (only sub-items) counts as missing
        if len(keys) > 1:
            problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} has more than one value[x]",
                                    expected="one value[x]"))
            return None
        key = keys[0]
        raw, here = answer[key], f"{path}.{key}"
        if key == "valueInteger":
            if isinstance(raw, int) and not isinstance(raw, bool) and (value := finite_number(raw)) is not None:
                return value
            return self._wrong_type(problems, here, "a JSON integer")
        if key == "valueDecimal":
            value = finite_number(raw)
            return value if value is not None else self._wrong_type(problems, here, "a JSON number")
        if key == "valueQuantity":
            value = finite_number(raw.get("value")) if isinstance(raw, dict) else None
            return value if value is not None else self._wrong_type(problems, f"{here}.value", "a JSON number")
        if key == "valueString":
            if not isinstance(raw, str):
                return self._wrong_type(problems, here, "a string")
            if NUMERIC.fullmatch(raw):
                return float(raw)
            problems.append(Problem(field=here, code="not_a_number", message=f"{here} is not a number",
                                    expected="a numeric answer such as \"2\""))
            return None
        if key == "valueCoding":
            if not isinstance(raw, dict):
                return self._wrong_type(problems, here, "a Coding object")
            return self._coding(raw, answer, here, link_id, number, problems)
        if key in ANSWER_TYPES:
            problems.append(Problem(field=here, code="unscorable_answer",
                                    message=f"{self.instrument.id} item {number}: a {key} answer cannot be scored",
                                    expected="valueInteger, valueDecimal, valueQuantity, a numeric valueString "
                                             "or a weighed valueCoding"))
            return None
        problems.append(Problem(field=path, code="invalid_fhir",
                                message=f"{path} has {shown(key)}, which is not an R4 answer value type",
                                expected="valueInteger, valueDecimal, valueString, valueCoding, ..."))
        return None

    @staticmethod
    def _not_finite(problems: list[Problem], path: str, what: str) -> None:
        problems.append(Problem(field=path, code="not_a_number", message=f"{what} is not a finite number",
                                expected="an itemWeight or ordinalValue extension with a finite valueDecimal"))

    @staticmethod
    def _wrong_type(problems: list[Problem], path: str, expected: str) -> None:
        problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} has the wrong type",
                                expected=expected))

    def _unmatched_display(self, display: str, path: str, link_id: str, number: int,
                           problems: list[Problem]) -> None:
        """An answer coding with only a display that none of this Questionnaire's options for the item has.
        The display is named when it looks like a code, or when it differs from an option's only in case or
        spaces (then it is a label, not free text); other text is not repeated (it may identify a person)."""
        options = self.displays.get(link_id, {})
        near = [d for d in options if d.casefold().split() == display.casefold().split()]
        received = repr(display) if near else shown(display) if CODE_LIKE.fullmatch(display) else \
            f"a text of {len(display)} characters that is none of them (not shown)"
        if options:
            expected = ("a display exactly as the Questionnaire's answer options have it: "
                        + ", ".join(repr(d) for d in options) + ", or the coding's code")
            said = f" (it differs from {near[0]!r} in case or spaces: displays are matched exactly)" if near else ""
        else:
            expected = (f"the coding's code (a LOINC answer code of {self.instrument.id} item {number}, or the "
                        "code a catalogued or imported Questionnaire gives the answer): a display alone is read "
                        "only against such a Questionnaire's answer options")
            said = ""
        problems.append(Problem(
            field=path, code="unmatched_display",
            message=f"linkId {shown(link_id)} ({self.instrument.id} item {number}): the answer coding has no code "
                    f"and its display, {received}, is not one of this Questionnaire's answer options for the "
                    f"item{said}",
            expected=expected))

    def _coding(self, coding: dict[str, Any], answer: dict[str, Any], path: str, link_id: str, number: int,
                problems: list[Problem]) -> float | None:
        answer_path = path.removesuffix(".valueCoding")
        for weight, where in ((_weight(coding), f"{path}.extension"), (_weight(answer), f"{answer_path}.extension")):
            if weight is not None:
                return weight if math.isfinite(weight) else self._not_finite(problems, where, "itemWeight")
        answer_codes = self.instrument.coding.weights_for(number)  # the item's own codes, then the common ones
        code = coding.get("code")
        display = coding.get("display")
        if code is None and isinstance(display, str) and not NUMERIC.fullmatch(display):
            code = self.displays.get(link_id, {}).get(display)  # exactly, and only this Questionnaire's options
            if code is None:
                self._unmatched_display(display, path, link_id, number, problems)
                return None
        if isinstance(code, str):
            if code in self.option_weights.get(link_id, {}):
                weight = self.option_weights[link_id][code]
                return weight if math.isfinite(weight) else self._not_finite(
                    problems, path, "the Questionnaire's answerOption weight for this code")
            if code in answer_codes:
                return answer_codes[code]
        for text in (code, coding.get("display")):
            if isinstance(text, str) and NUMERIC.fullmatch(text):
                return float(text)
        loinc = f" ({', '.join(answer_codes)})" if answer_codes else ""
        problems.append(Problem(
            field=path, code="unscorable_answer",
            message=f"{self.instrument.id} item {number}: the answer code {shown(code)} has no weight",
            expected="an itemWeight extension, a contained Questionnaire with answerOption weights, a LOINC "
                     f"answer code of {self.instrument.id} item {number}{loinc}, or a numeric code or display"))
        return None


def _last_segment(value: Any) -> str:
    """`/44249-1/44250-9` and `http://loinc.org#44250-9` -> `44250-9`."""
    if not isinstance(value, str):
        return ""
    value = value.rstrip("/")
    return str(value[max(value.rfind("/"), value.rfind("#")) + 1:])

