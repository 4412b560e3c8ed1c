"""FHIR R4 QuestionnaireResponse, Bundle and total-score Observation, as real EHRs send them.

Hand-written and lenient where the real world differs, precise where it is wrong: every problem
names its field path (`entry[1].resource.item[3].answer[0].valueCoding`), never free text.

**Resources.** A QuestionnaireResponse; a Bundle of any type (collection, transaction, batch,
document, searchset, ...) whose entries are answered one by one (`entry.resource`). Supporting
entries (Questionnaire, Patient, Practitioner, PractitionerRole, EpisodeOfCare, Encounter,
Organization, RelatedPerson) are read, for answer weights and `urn:` references, and get no answer;
any other entry that is not a submission gets its own rejection, and a Bundle with no submission at
all is rejected. An Observation whose `code` is an instrument's LOINC total-score code.

**References inside a Bundle.** A reference `urn:uuid:...` (any `urn:`) names the entry whose
`fullUrl` it is, as transaction and document Bundles write them: it resolves to that entry's
resourceType and resource `id`, and the `<Type>/<id>` rules below then apply (the Patient entry's id
is the client id). An entry whose resource has no id, a urn that is no entry's fullUrl (or that two
entries share, or any urn outside a Bundle) is `unresolved_reference` at that field. In `basedOn`
only a urn naming an EpisodeOfCare entry counts (a CarePlan or ServiceRequest is not an episode), and
an unresolved one is ignored as any other basedOn.

**Instrument**, first match wins: the tenant's questionnaire map (canonical with or without
`|version`); the registry's canonicals and LOINC panels (`http://loinc.org/q/44249-1`); any canonical
whose last path segment is a LOINC panel code; for `questionnaire: "#id"` the contained
Questionnaire's url, identifiers and codes; then `meta.tag` codes. A Reference object (STU3 style) is
refused as `not_fhir_r4`.

**linkId -> item number**, first match wins:
1. the tenant's linkId map for the instrument (descriptive names, opaque ids);
2. a total-score item (the instrument's LOINC total code as linkId or definition, or a linkId
   containing "total", "score" or the word "sum"): never scored, see below;
3. a group (sub-items and no answer) is a container, never an item; its sub-items are read;
4. the item's LOINC code as the linkId's last path segment ("44250-9", "/44250-9",
   "/44249-1/44250-9");
5. `item.definition` ending in the item's LOINC code;
6. the item's aliases in the registry (case-insensitive);
7. a positional name whose last part is the item number: "1", "q1", "item1", "item_01", "g1.q1",
   "phq9-1", "PHQ.1". Never for LOINC-shaped linkIds of other codes. In nested groups the last number
   counts, so two groups both numbering from q1 are rejected as `duplicate_item`, not guessed.
Items nest (groups, answers with sub-items): all levels are read, at most 10 deep.

**Answer value**: valueInteger, valueDecimal, valueQuantity.value, a numeric valueString, or a
valueCoding weighed by, in order: an itemWeight (or the older ordinalValue) extension on the coding,
then on the answer; the contained (or bundled) Questionnaire's answerOption weight for that linkId;
the item's own LOINC answer codes in the registry (`item_answer_codes`: GAD-7 and GAD-2 item 2, LOINC
68509-9, also offers LA18938-3 "More days than not" = 2), then the instrument's common LOINC answer
codes; a code that is a number; a display that is a number. Weights belong to the item (linkId),
never to a code in general: LA18938-3 on a PHQ-9 item is `unscorable_answer`. An answer without a value,
or with a data-absent-reason extension, and an item without answers count as missing (None): the
instrument's missing-item rule decides (a PHQ-9 without item 9 is rejected).

**Unscored items** (PHQ-9 item 10, difficulty) are kept in the responses when their answer can be
read (range-checked like any item, never scored); when it cannot be weighed they are left out with
the warning `unscored_item_ignored` rather than rejecting the submission.

**Total-score item**: dropped, never scored. When every scored item is present the items' total is
computed and a stated total that differs gives the warning `total_mismatch` on the accepted
submission; with items missing it gives `stated_total_ignored`.

**Header.** `id` (else `identifier.value`; else, for a Bundle entry, its `urn:uuid:` fullUrl as
sent, with the warning `temporary_submission_id`: FHIR makes that urn valid only within its Bundle,
so a resend with the same fullUrl is recognised but one under a new urn is a new submission) is the
submission id. `status` completed or amended (amended sets `amends`). `subject` Patient/<id> (or a
logical reference `identifier.value`) is the client. `author` Practitioner/<id> or
PractitionerRole/<id> is the clinician; an author that is the Patient, a RelatedPerson, Device or
Organization, or a logical reference without a type, gives no clinician. Submission, client and
episode ids may hold dots as FHIR ids do; a clinician id may not (it is a NATS subject token in
`rapport.<tenant>.notify.<clinician>`). `authored` must be a date and time with a UTC offset.
Episode: the extension http://rapport.dev/fhir/StructureDefinition/episode (valueString,
valueIdentifier or valueReference), else `basedOn` EpisodeOfCare/<id>, else none (scoring then
places it by the gap rule, services/scoring/episodes.py). `encounter` is one visit, not an episode,
and is not used: taking it as the episode would start a new episode at every session and no change
could ever be measured.

**Observation** (total only, `item_level` False): value from valueQuantity.value or valueInteger,
range-checked; status final, amended or corrected; time from effectiveDateTime, effectiveInstant,
effectivePeriod.start or issued; clinician from the first Practitioner(Role) performer. Observation
ids are not unique across patients in real feeds, so the submission id is `obs:<client>:<id>`, or
`obs:` + the first 40 hex digits of sha256(client NUL id) when that breaks the id rule. An
Observation `derivedFrom` a QuestionnaireResponse in the same Bundle is rejected as
`derived_from_response`: that response is scored from its items, and scoring both would count the
administration twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.ingest.normalise.outcome import Draft, Rejection, StatedTotal, TenantMapping
from services.ingest.normalise.reading import check_id, finite_number, read_instant, readable_id, shown
from shared.contracts.problems import Problem
from shared.contracts.submission import SourceFormat, Submission
from shared.contracts.tenancy import ID_PATTERN
from shared.instruments import Instrument, Registry

ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
EPISODE_EXTENSION = "http://rapport.dev/fhir/StructureDefinition/episode"
FINAL_QR = ("completed", "amended")
FINAL_OBSERVATION = ("final", "amended", "corrected")
PRACTITIONER = ("Practitioner", "PractitionerRole")
OTHER_AUTHORS = ("Patient", "RelatedPerson", "Device", "Organization")
MAX_DEPTH = 10
LOINC_CODE = re.compile(r"^\d{1,7}-\d$")
POSITIONAL = re.compile(r"^(?:.*[._\-/:])?(?:q|qn|item|question|i)?[._\-]?(\d{1,3})$", re.IGNORECASE)
TOTAL_NAME = re.compile(r"total|score|(?:^|[^a-z])sum(?:[^a-z]|$)", re.IGNORECASE)
NUMERIC = re.compile(r"^\s*[+-]?\d{1,6}(?:\.\d{1,6})?\s*$")
URN_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
ANSWER_TYPES = ("valueBoolean", "valueDate", "valueDateTime", "valueTime", "valueUri", "valueAttachment",
                "valueReference")


class Invalid(Exception):
    def __init__(self, problems: list[Problem], instrument: Instrument | None = None) -> None:
        self.problems = problems
        self.instrument = instrument  # when it was identified before the problems were found


# fullUrl -> the entry's resource, for `urn:` references between entries; None when two entries share it.
Bundled = Mapping[str, dict[str, Any] | None]


@dataclass
class Context:
    tenant: str
    registry: Registry
    mapping: TenantMapping
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # bundled Questionnaires by url
    bundled_responses: set[str] = field(default_factory=set)  # references to the Bundle's responses
    full_urls: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # urn:uuid fullUrl -> resource


def normalise_fhir(document: dict[str, Any], tenant: str, registry: Registry,
                   mapping: TenantMapping) -> list[Draft | Rejection]:
    context = Context(tenant, registry, mapping)
    if document.get("resourceType") != "Bundle":
        return [_resource(document, context, prefix="", full_url=None)]
    entries = document.get("entry")
    if entries is None or entries == []:
        return [Rejection.of(Problem(field="entry", code="empty_bundle", message="the Bundle has no entries",
                                     expected="entries whose resource is a QuestionnaireResponse"))]
    if not isinstance(entries, list):
        return [Rejection.of(Problem(field="entry", code="invalid_fhir", message="entry is not a list",
                                     expected="a list of Bundle entries"))]
    _index_bundle(entries, context)
    results: list[Draft | Rejection] = []
    for n, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") in SUPPORTING:
            continue  # read for references and answer weights; not a submission, so no answer of its own
        if not isinstance(entry, dict):
            results.append(Rejection.of(Problem(field=f"entry[{n}]", code="invalid_fhir",
                                                message=f"entry[{n}] is not an object")))
        elif resource is None:
            results.append(Rejection.of(Problem(field=f"entry[{n}].resource", code="missing_field",
                                                message=f"entry[{n}] has no resource",
                                                expected="a QuestionnaireResponse in entry.resource")))
        elif not isinstance(resource, dict):
            results.append(Rejection.of(Problem(field=f"entry[{n}].resource", code="invalid_fhir",
                                                message=f"entry[{n}].resource is not an object")))
        else:
            full_url = entry.get("fullUrl")
            results.append(_resource(resource, context, prefix=f"entry[{n}].resource.",
                                     full_url=full_url if isinstance(full_url, str) else None))
    if not results:
        return [Rejection.of(Problem(field="entry", code="empty_bundle",
                                     message="the Bundle holds only supporting resources, no submission",
                                     expected="entries whose resource is a QuestionnaireResponse or an Observation"))]
    return results


# Bundle entries that support the submissions in it (references, answer weights): answered by none.
SUPPORTING = frozenset({"Questionnaire", "Patient", "Practitioner", "PractitionerRole", "EpisodeOfCare", "Encounter",
                        "Organization", "RelatedPerson"})


def _index_bundle(entries: list[Any], context: Context) -> None:
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        full_url = entry.get("fullUrl")
        kind, ident = resource.get("resourceType"), resource.get("id")
        keys = [k for k in (full_url, f"{kind}/{ident}" if isinstance(ident, str) else None) if isinstance(k, str)]
        if isinstance(full_url, str) and full_url.startswith("urn:"):
            # Two entries with one fullUrl break the Bundle rules (bdl-7): a reference to it names neither.
            context.full_urls[full_url] = None if full_url in context.full_urls else resource
        if kind == "Questionnaire":
            url = resource.get("url")
            if isinstance(url, str):
                keys.append(url.split("|", 1)[0])
            context.definitions.update(dict.fromkeys(keys, resource))
        elif kind == "QuestionnaireResponse":
            context.bundled_responses.update(keys)


def _resource(resource: dict[str, Any], context: Context, prefix: str, full_url: str | None) -> Draft | Rejection:
    kind = resource.get("resourceType")
    source: SourceFormat = "fhir-observation" if kind == "Observation" else "fhir-questionnaire-response"
    try:
        if kind == "QuestionnaireResponse":
            return _questionnaire_response(resource, context, full_url)
        if kind == "Observation":
            return _observation(resource, context, full_url)
        raise Invalid([_not_a_submission(kind)])
    except Invalid as invalid:
        problems = [p.model_copy(update={"field": prefix + p.field}) for p in invalid.problems]
        submission_id = _observation_id(resource, context.full_urls, full_url) if kind == "Observation" \
            else _response_id(resource, full_url)
        return Rejection(submission_id=submission_id, source_format=source if kind in (
            "QuestionnaireResponse", "Observation") else None, problems=problems,
            instrument=invalid.instrument.id if invalid.instrument is not None else None)


def _not_a_submission(kind: Any) -> Problem:
    expected = "QuestionnaireResponse, a Bundle of them, or an Observation with a LOINC total-score code"
    if not isinstance(kind, str):
        return Problem(field="resourceType", code="invalid_fhir", message="resourceType is not a string",
                       expected=expected)
    if kind == "QuestionnaireAnswers":
        return Problem(field="resourceType", code="not_fhir_r4",
                       message="QuestionnaireAnswers is FHIR DSTU2; R4 calls it QuestionnaireResponse",
                       expected="an R4 QuestionnaireResponse")
    if kind == "Questionnaire":
        return Problem(field="resourceType", code="unsupported_resource",
                       message="a Questionnaire is a definition, not a submission (in a Bundle it is read to "
                               "weigh the answers of the Bundle's responses)", expected=expected)
    if kind == "Bundle":
        return Problem(field="resourceType", code="unsupported_resource", message="a Bundle inside a Bundle",
                       expected=expected)
    return Problem(field="resourceType", code="unsupported_resource",
                   message=f"resourceType {shown(kind)} is not a submission", expected=expected)


# --- small typed readers -------------------------------------------------------------------------

def _extensions(holder: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Extensions are optional annotations: malformed ones are skipped, not fatal."""
    extensions = holder.get("extension")
    if extensions and isinstance(extensions, list):
        yield from (e for e in extensions if isinstance(e, dict))


def _declined(holder: dict[str, Any]) -> bool:
    return "extension" in holder and any(e.get("url") == DATA_ABSENT for e in _extensions(holder))


def _weight(holder: dict[str, Any]) -> float | None:
    if "extension" not in holder:
        return None
    for ext in _extensions(holder):
        if ext.get("url") in (ITEM_WEIGHT, ORDINAL_VALUE):
            for key in ("valueDecimal", "valueInteger"):
                if (number := finite_number(ext.get(key))) is not None:
                    return number
    return None


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _parse_reference(value: Any, path: str, problems: list[Problem],
                     bundle: Bundled) -> tuple[str | None, str, str] | None:
    """(resource type if known, id, field path of the id) of a Reference, or None with a problem."""
    if not isinstance(value, dict):
        problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} is not a Reference object",
                                expected="{\"reference\": \"<Type>/<id>\"}"))
        return None
    reference = value.get("reference")
    if isinstance(reference, str):
        if reference.strip().startswith("urn:"):
            return _bundled_reference(reference.strip(), f"{path}.reference", problems, bundle)
        parts = reference.strip().split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-1] and parts[-2]:
            return parts[-2], parts[-1], f"{path}.reference"
        why = "a contained reference is not resolved" if reference.startswith("#") \
            else "it is not of the form <Type>/<id>"
        problems.append(Problem(field=f"{path}.reference", code="invalid_reference",
                                message=f"{path}.reference cannot be read: {why}",
                                expected="<Type>/<id>, or an identifier with a value"))
        return None
    if reference is not None:
        problems.append(Problem(field=f"{path}.reference", code="invalid_fhir",
                                message=f"{path}.reference is not a string"))
        return None
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        kind = value.get("type")
        return (kind if isinstance(kind, str) else None), identifier["value"], f"{path}.identifier.value"
    problems.append(Problem(field=f"{path}.reference", code="missing_field", message=f"{path} has no reference",
                            expected="<Type>/<id>, or an identifier with a value"))
    return None


def _bundled_reference(reference: str, field: str, problems: list[Problem],
                       bundle: Bundled) -> tuple[str, str, str] | None:
    """A `urn:uuid:` (or other `urn:`) reference to the fullUrl of another entry of the same Bundle, as
    transaction and document Bundles write them: that entry's type and its resource id, which then follows
    the rules of a `<Type>/<id>` reference. An entry without an id has nothing Rapport could keep."""
    expected = "the fullUrl of an entry of the same Bundle whose resource has an id, or <Type>/<id>"
    if reference not in bundle:
        where = "any entry of this Bundle" if bundle else "a Bundle entry (this resource was not sent in a Bundle)"
        problems.append(Problem(field=field, code="unresolved_reference",
                                message=f"{field} {shown(reference)} is not the fullUrl of {where}",
                                expected=expected))
        return None
    target = bundle[reference]
    if target is None:
        problems.append(Problem(field=field, code="unresolved_reference",
                                message=f"{field} {shown(reference)} is the fullUrl of more than one Bundle entry",
                                expected="each fullUrl once in the Bundle"))
        return None
    kind, ident = target.get("resourceType"), target.get("id")
    if not isinstance(kind, str) or not isinstance(ident, str) or not ident:
        entry = f"a {shown(kind)} entry" if isinstance(kind, str) else "an entry without a resourceType"
        problems.append(Problem(field=field, code="unresolved_reference",
                                message=f"{field} {shown(reference)} names {entry} of this Bundle whose resource "
                                        "has no id",
                                expected=expected))
        return None
    return kind, ident, field


def _reference_id(value: Any, path: str, types: tuple[str, ...], problems: list[Problem], bundle: Bundled, *,
                  token: bool = False) -> str | None:
    parsed = _parse_reference(value, path, problems, bundle)
    if parsed is None:
        return None
    kind, ident, id_field = parsed
    if kind is not None and kind not in types:
        problems.append(Problem(field=f"{path}.reference", code="invalid_reference",
                                message=f"{path} references a {shown(kind)}, not a {' or '.join(types)}",
                                expected=f"{types[0]}/<id>"))
        return None
    if (problem := check_id(ident, id_field, token=token)) is not None:
        problems.append(problem)
        return None
    return ident


def _subject(resource: dict[str, Any], problems: list[Problem], bundle: Bundled) -> str | None:
    if resource.get("subject") is None:
        problems.append(Problem(field="subject", code="missing_field", message="subject is missing",
                                expected="{\"reference\": \"Patient/<client id>\"}"))
        return None
    return _reference_id(resource["subject"], "subject", ("Patient",), problems, bundle)


def _clinician(value: Any, path: str, problems: list[Problem], bundle: Bundled) -> str | None:
    """Practitioner(Role) -> clinician id; other authors (the client, a relative, a device) -> None."""
    if value is None:
        return None
    scratch: list[Problem] = []
    parsed = _parse_reference(value, path, scratch, bundle)
    if parsed is not None and parsed[0] in OTHER_AUTHORS:
        return None
    if parsed is not None and parsed[0] is None:  # a logical reference of unknown type: not a clinician
        return None
    if parsed is None:
        problems.extend(scratch)
        return None
    return _reference_id(value, path, PRACTITIONER, problems, bundle, token=True)


def _episode(resource: dict[str, Any], problems: list[Problem], bundle: Bundled) -> str | None:
    extensions = resource.get("extension")
    for n, ext in enumerate(extensions if isinstance(extensions, list) else []):
        if not isinstance(ext, dict) or ext.get("url") != EPISODE_EXTENSION:
            continue
        path = f"extension[{n}]"
        ident: str | None = None
        if isinstance(ext.get("valueString"), str):
            ident, path = ext["valueString"], f"{path}.valueString"
        elif isinstance(ext.get("valueIdentifier"), dict) and isinstance(ext["valueIdentifier"].get("value"), str):
            ident, path = ext["valueIdentifier"]["value"], f"{path}.valueIdentifier.value"
        elif "valueReference" in ext:
            return _reference_id(ext["valueReference"], f"{path}.valueReference", ("EpisodeOfCare",), problems,
                                 bundle)
        if ident is None:
            problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} has no episode id",
                                    expected="valueString, valueIdentifier or valueReference EpisodeOfCare/<id>"))
            return None
        if (problem := check_id(ident, path)) is not None:
            problems.append(problem)
        return ident if problem is None else None
    for n, based in enumerate(_objects(resource.get("basedOn"))):
        reference = based.get("reference")
        if isinstance(reference, str) and reference.strip().startswith("urn:"):
            target = bundle.get(reference.strip())
            if target is not None and target.get("resourceType") == "EpisodeOfCare":
                return _reference_id(based, f"basedOn[{n}]", ("EpisodeOfCare",), problems, bundle)
            continue  # a CarePlan or ServiceRequest (bundled or not) is not an episode
        if isinstance(reference, str) and (match := re.search(r"(?:^|/)EpisodeOfCare/([^/]+)", reference)):
            if (problem := check_id(match.group(1), f"basedOn[{n}].reference")) is not None:
                problems.append(problem)
                return None
            return match.group(1)
    return None


# --- QuestionnaireResponse -----------------------------------------------------------------------

def _stated_id(resource: dict[str, Any]) -> tuple[Any, str]:
    """The resource's own id, else its identifier's value (a list in R5 and some R4 senders), and its path."""
    ident, path = resource.get("id"), "id"
    if ident is None:
        identifier, path = resource.get("identifier"), "identifier.value"
        if isinstance(identifier, list):
            identifier, path = next(iter(_objects(identifier)), None), "identifier[0].value"
        ident = identifier.get("value") if isinstance(identifier, dict) else None
    return ident, path


def _entry_urn(resource: dict[str, Any], full_url: str | None) -> str | None:
    """The Bundle entry's `urn:uuid:` fullUrl, when the resource states no id or identifier of its own (a
    transaction entry the server is to create). It stands in as the submission id, the whole urn as sent."""
    if _stated_id(resource)[0] is None and full_url is not None and URN_UUID.fullmatch(full_url):
        return full_url
    return None


def _temporary_id(resource: dict[str, Any], full_url: str | None) -> list[Problem]:
    if _entry_urn(resource, full_url) is None:
        return []
    return [Problem(
        field="id", code="temporary_submission_id",
        message="the resource has no id or identifier, so its Bundle entry's urn:uuid fullUrl is the submission id: "
                "a resend with the same fullUrl is recognised, one under a new urn:uuid counts as a new submission "
                "(FHIR makes a urn:uuid fullUrl valid only within its Bundle)",
        expected="id or identifier.value, unique per tenant")]


def _response_id(resource: dict[str, Any], full_url: str | None) -> str | None:
    return _entry_urn(resource, full_url) or readable_id(_stated_id(resource)[0])


def _submission_id(resource: dict[str, Any], problems: list[Problem], full_url: str | None) -> str | None:
    if (urn := _entry_urn(resource, full_url)) is not None:
        return urn
    ident, path = _stated_id(resource)
    if ident is None:
        problems.append(Problem(field="id", code="missing_field", message="the resource has no id",
                                expected="id (or identifier.value), unique per tenant"))
        return None
    if not isinstance(ident, str):
        problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} is not a string"))
        return None
    if (problem := check_id(ident, path)) is not None:
        problems.append(problem)
        return None
    return ident


def _questionnaire_response(resource: dict[str, Any], context: Context, full_url: str | None) -> Draft:
    problems: list[Problem] = []
    submission_id = _submission_id(resource, problems, full_url)
    status = resource.get("status")
    if status not in FINAL_QR:
        problems.append(Problem(field="status", code="status_not_final", message=f"status is {shown(status)}",
                                expected="completed or amended"))
    instrument, definitions = _instrument(resource, context, problems)
    client = _subject(resource, problems, context.full_urls)
    clinician = _clinician(resource.get("author"), "author", problems, context.full_urls)
    authored = read_instant(resource.get("authored"), "authored")
    if isinstance(authored, Problem):
        problems.append(authored)
    episode = _episode(resource, problems, context.full_urls)
    reading = None
    if instrument is not None:
        reading = _Responses(instrument, context.mapping, _option_weights(definitions))
        reading.walk(resource.get("item"), "item", 0)
        problems += reading.problems
    if problems or reading is None or isinstance(authored, Problem):
        raise Invalid(problems, instrument)
    assert submission_id is not None and client is not None and instrument is not None
    submission = _submission(
        instrument, tenant=context.tenant, submission_id=submission_id, client_id=client,
        episode_id=episode, clinician_id=clinician, administered_at=authored, responses=reading.responses,
        amends=status == "amended", source_format="fhir-questionnaire-response",
        warnings=[*_temporary_id(resource, full_url), *reading.warnings],
    )
    return Draft(submission, reading.stated_total)


def _submission(instrument: Instrument, **fields: Any) -> Submission:
    """Every field was checked above; the model's own validation is the last line of defence."""
    try:
        return Submission(instrument=instrument.id, **fields)
    except ValidationError as exc:
        raise Invalid([Problem(field=".".join(str(p) for p in e["loc"]) or "body", code="invalid_submission",
                               message=f"{e['msg']}") for e in exc.errors(include_input=False, include_url=False,
                                                                          include_context=False)],
                      instrument) from None


def _instrument(resource: dict[str, Any], context: Context,
                problems: list[Problem]) -> tuple[Instrument | None, list[dict[str, Any]]]:
    """The instrument, and the Questionnaire definitions at hand (contained or bundled) for weights."""
    canonical = resource.get("questionnaire")
    contained = [c for c in _objects(resource.get("contained")) if c.get("resourceType") == "Questionnaire"]
    if isinstance(canonical, dict):
        problems.append(Problem(field="questionnaire", code="not_fhir_r4",
                                message="questionnaire is a Reference object (FHIR STU3); R4 uses a canonical URL",
                                expected="a canonical URL string such as http://loinc.org/q/44249-1"))
        return None, contained
    if canonical is not None and not isinstance(canonical, str):
        problems.append(Problem(field="questionnaire", code="invalid_fhir", message="questionnaire is not a string",
                                expected="a canonical URL string such as http://loinc.org/q/44249-1"))
        return None, contained
    keys: list[str] = []
    definitions = list(contained)
    if canonical:
        if canonical.startswith("#"):
            target = [c for c in contained if c.get("id") == canonical[1:]]
            definitions = target or contained
            keys += [k for c in target for k in _definition_keys(c)]
        else:
            keys.append(canonical)
            bundled = context.definitions.get(canonical.split("|", 1)[0])
            if bundled is not None:
                definitions.append(bundled)
                keys += _definition_keys(bundled)
    meta = resource.get("meta")
    for tag in _objects(meta.get("tag")) if isinstance(meta, dict) else []:
        if isinstance(tag.get("code"), str):
            if isinstance(tag.get("system"), str):
                keys.append(f"{tag['system']}|{tag['code']}")
            keys.append(tag["code"])
    for key in keys:
        found = _resolve(key, context)
        if isinstance(found, Problem):
            problems.append(found)
            return None, definitions
        if found is not None:
            return found, definitions
    if not canonical and not keys:
        problems.append(Problem(field="questionnaire", code="missing_field", message="questionnaire is missing",
                                expected="the Questionnaire's canonical URL, e.g. http://loinc.org/q/44249-1"))
    else:
        problems.append(Problem(
            field="questionnaire", code="unknown_instrument",
            message=f"the questionnaire {shown(canonical)} is not one Rapport knows",
            expected="a LOINC panel canonical (e.g. http://loinc.org/q/44249-1), a known canonical, or one "
                     "in this tenant's questionnaire map"))
    return None, definitions


def _definition_keys(questionnaire: dict[str, Any]) -> list[str]:
    keys = [questionnaire["url"]] if isinstance(questionnaire.get("url"), str) else []
    keys += [i["value"] for i in _objects(questionnaire.get("identifier")) if isinstance(i.get("value"), str)]
    keys += [c["code"] for c in _objects(questionnaire.get("code")) if isinstance(c.get("code"), str)]
    return keys


def _resolve(key: str, context: Context) -> Instrument | Problem | None:
    bare = key.split("|", 1)[0]
    mapped = context.mapping.questionnaires.get(key) or context.mapping.questionnaires.get(bare)
    if mapped is not None:
        return context.registry.get(mapped) or Problem(
            field="questionnaire", code="unknown_instrument",
            message=f"this tenant's questionnaire map names {shown(mapped)}, which is not an instrument Rapport has",
            expected="one of " + ", ".join(i.id for i in context.registry))
    found = context.registry.by_questionnaire(bare)
    last = bare.rstrip("/").rsplit("/", 1)[-1]
    if found is None and LOINC_CODE.fullmatch(last):
        found = context.registry.by_questionnaire(last)
    return found


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


class _Responses:
    """Walks a QuestionnaireResponse's items into item number -> value, collecting every problem."""

    def __init__(self, instrument: Instrument, mapping: TenantMapping,
                 option_weights: dict[str, dict[str, float]]) -> None:
        self.instrument = instrument
        self.configured = mapping.link_ids.get(instrument.id, {})
        self.by_loinc = {i.loinc: i.number for i in instrument.items if i.loinc}
        self.by_alias = {a.casefold(): i.number for i in instrument.items for a in i.aliases}
        self.total_code = instrument.coding.loinc_total
        self.option_weights = option_weights
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
        number = self.configured.get(link_id)
        code = _last_segment(link_id)
        if number is None:
            if self._is_total(link_id, code, item):
                if answers and self.stated_total is None:
                    scratch: list[Problem] = []  # an unreadable stated total is as good as none
                    value = self._value(answers[0], f"{here}.answer[0]", link_id, 0, scratch)
                    if value is not None and not scratch:
                        self.stated_total = StatedTotal(f"{here}.answer[0]", value)
                return
            if isinstance(item.get("item"), list) and item["item"] and not answers:
                return  # a group: its sub-items are read
            number = self._item_number(link_id, code, item)
        if number is None:
            if answers:
                self.problems.append(Problem(
                    field=f"{here}.linkId", code="unmapped_link_id",
                    message=f"linkId {shown(link_id)} is not an item of {instrument.id}",
                    expected="LOINC item codes, positional names (q1, phq9-1), or this tenant's linkId map"))
            return
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

    def _is_total(self, link_id: str, code: str, item: dict[str, Any]) -> bool:
        if self.total_code and self.total_code in (code, _last_segment(item.get("definition"))):
            return True
        return bool(TOTAL_NAME.search(link_id))

    def _item_number(self, link_id: str, code: str, item: dict[str, Any]) -> int | None:
        number = self.by_loinc.get(code) or self.by_loinc.get(_last_segment(item.get("definition"))) \
            or self.by_alias.get(link_id.casefold())
        if number is not None:
            return number
        if LOINC_CODE.fullmatch(code):
            return None  # the LOINC code of something else: never read as a position
        match = POSITIONAL.fullmatch(link_id)
        if match:
            number = int(match.group(1))
            return number if 1 <= number <= len(self.instrument.items) else None
        return None

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
    def _wrong_type(problems: list[Problem], path: str, expected: str) -> None:
        problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} has the wrong type",
                                expected=expected))

    def _coding(self, coding: dict[str, Any], answer: dict[str, Any], path: str, link_id: str, number: int,
                problems: list[Problem]) -> float | None:
        for weight in (_weight(coding), _weight(answer)):
            if weight is not None:
                return weight
        answer_codes = self.instrument.coding.weights_for(number)  # the item's own codes, then the common ones
        code = coding.get("code")
        if isinstance(code, str):
            if code in self.option_weights.get(link_id, {}):
                return self.option_weights[link_id][code]
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


def _relative(reference: str) -> str:
    """`https://ehr.example/fhir/QuestionnaireResponse/1/_history/2` -> `QuestionnaireResponse/1`."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:])


def _last_segment(value: Any) -> str:
    """`/44249-1/44250-9` and `http://loinc.org#44250-9` -> `44250-9`."""
    if not isinstance(value, str):
        return ""
    value = value.rstrip("/")
    return str(value[max(value.rfind("/"), value.rfind("#")) + 1:])


# --- Observation (total only) --------------------------------------------------------------------

def _observation_instrument(resource: dict[str, Any], context: Context,
                            problems: list[Problem]) -> Instrument | None:
    code = resource.get("code")
    codings = _objects(code.get("coding")) if isinstance(code, dict) else []
    for coding in codings:
        if isinstance(coding.get("code"), str) and (found := context.registry.by_total_code(coding["code"])):
            return found
    known = ", ".join(f"{i.coding.loinc_total} ({i.id})" for i in context.registry if i.coding.loinc_total)
    problems.append(Problem(
        field="code.coding", code="unknown_instrument" if codings else "missing_field",
        message="the Observation's code is not a known instrument total score" if codings
        else "the Observation has no code.coding", expected=f"a LOINC total-score code: {known}"))
    return None


def _observed_at(resource: dict[str, Any]) -> Any:
    period = resource.get("effectivePeriod")
    for path, value in (("effectiveDateTime", resource.get("effectiveDateTime")),
                        ("effectiveInstant", resource.get("effectiveInstant")),
                        ("effectivePeriod.start", period.get("start") if isinstance(period, dict) else None),
                        ("issued", resource.get("issued"))):
        if value is not None:
            return read_instant(value, path)
    return read_instant(None, "effectiveDateTime")


def _observation_value(resource: dict[str, Any], problems: list[Problem]) -> float | None:
    for key, path in (("valueQuantity", "valueQuantity.value"), ("valueInteger", "valueInteger")):
        if key in resource:
            raw = resource[key]
            value = finite_number(raw.get("value") if isinstance(raw, dict) else raw)
            if value is None:
                problems.append(Problem(field=path, code="invalid_fhir", message=f"{path} is not a number",
                                        expected="the total as a JSON number"))
            return value
    problems.append(Problem(field="valueQuantity", code="missing_field", message="the Observation has no value",
                            expected="the total in valueQuantity.value or valueInteger"))
    return None


def _observation_id(resource: dict[str, Any], bundle: Bundled, full_url: str | None) -> str | None:
    scratch: list[Problem] = []
    client = _reference_id(resource.get("subject"), "subject", ("Patient",), scratch, bundle) \
        if resource.get("subject") is not None else None
    ident = _submission_id(resource, scratch, full_url)
    if client is None or ident is None:
        return _response_id(resource, full_url)
    # Observation ids repeat across patients in real feeds: the submission id includes the patient.
    submission_id = f"obs:{client}:{ident}"
    if not ID_PATTERN.fullmatch(submission_id):
        submission_id = "obs:" + hashlib.sha256(f"{client}\x00{ident}".encode()).hexdigest()[:40]
    return submission_id


def _observation(resource: dict[str, Any], context: Context, full_url: str | None) -> Draft:
    problems: list[Problem] = []
    instrument = _observation_instrument(resource, context, problems)
    status = resource.get("status")
    if status not in FINAL_OBSERVATION:
        problems.append(Problem(field="status", code="status_not_final", message=f"status is {shown(status)}",
                                expected="final, amended or corrected"))
    value = _observation_value(resource, problems)
    client = _subject(resource, problems, context.full_urls)
    _submission_id(resource, problems, full_url)
    observed = _observed_at(resource)
    if isinstance(observed, Problem):
        problems.append(observed)
    clinician = None
    for n, performer in enumerate(_objects(resource.get("performer"))):
        reference = performer.get("reference")
        bundled = context.full_urls.get(reference.strip()) if isinstance(reference, str) else None
        if isinstance(reference, str) and (re.search(r"(?:^|/)(Practitioner|PractitionerRole)/", reference)
                                           or (bundled is not None and bundled.get("resourceType") in PRACTITIONER)):
            clinician = _reference_id(performer, f"performer[{n}]", PRACTITIONER, problems, context.full_urls,
                                      token=True)
            break
    for n, source in enumerate(_objects(resource.get("derivedFrom"))):
        reference = source.get("reference")
        if isinstance(reference, str) and (reference in context.bundled_responses
                                           or _relative(reference) in context.bundled_responses):
            problems.append(Problem(
                field=f"derivedFrom[{n}]", code="derived_from_response",
                message="this total is derived from a QuestionnaireResponse in the same Bundle, which is scored "
                        "from its items; scoring both would count the administration twice",
                expected="the QuestionnaireResponse alone, or this Observation without it"))
    episode = _episode(resource, problems, context.full_urls)
    if problems or isinstance(observed, Problem):
        raise Invalid(problems, instrument)
    submission_id = _observation_id(resource, context.full_urls, full_url)
    assert instrument is not None and client is not None and value is not None and submission_id is not None
    submission = _submission(
        instrument, tenant=context.tenant, submission_id=submission_id, client_id=client,
        episode_id=episode, clinician_id=clinician, administered_at=observed, reported_total=value,
        item_level=False, amends=status in ("amended", "corrected"), source_format="fhir-observation",
        warnings=_temporary_id(resource, full_url),
    )
    return Draft(submission)
