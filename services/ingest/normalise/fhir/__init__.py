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

**Instrument**, first match wins: the tenant's imported Questionnaires and its questionnaire map
(canonical with or without `|version`); the catalogue of published Questionnaires (fhir/catalogue.py,
whose linkIds and answer weights then come first for that response); the registry's canonicals and LOINC
panels (`http://loinc.org/q/44249-1`); any canonical whose last path segment is a LOINC panel code; for
`questionnaire: "#id"` the contained Questionnaire's url, identifiers and codes; then `meta.tag` codes;
then, when none of these names one, the items themselves (fhir/inference.py: exactly one instrument whose
items the linkIds match exactly, with the warning `instrument_inferred`; never a guess between two).
A Reference object (STU3 style) is refused as `not_fhir_r4`.

**Observation panels** in a Bundle (an instrument's LOINC panel code with `hasMember` item Observations)
are one item-level submission, see fhir/panel.py.

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
`rapport.<tenant>.notify.<clinician>`). `authored` must be a date and time with a UTC offset, from
1900-01-01T00:00:00Z to a day after Rapport received it (`out_of_range` outside: Rapport's sanity bounds,
reading.py); so must an Observation's time.
Episode: the extension http://rapport.dev/fhir/StructureDefinition/episode (valueString,
valueIdentifier or valueReference), else `basedOn` EpisodeOfCare/<id>, else none (scoring then
places it by the gap rule, services/scoring/episodes.py). `encounter` is one visit, not an episode,
and is not used: taking it as the episode would start a new episode at every session and no change
could ever be measured.

**Observation** (total only, `item_level` False): value from valueQuantity.value or valueInteger,
range-checked; status final, amended or corrected; time from effectiveDateTime, effectiveInstant,
effectivePeriod.start or issued; clinician from the first Practitioner(Role) performer. Observation
ids are not unique across patients in real feeds, so the submission id is `obs:` + the first 40 hex
digits of sha256(client id NUL Observation id): unique per client, and the client id is not in clear
in the log lines and events that carry the submission id. An
Observation `derivedFrom` a QuestionnaireResponse in the same Bundle is rejected as
`derived_from_response`: that response is scored from its items, and scoring both would count the
administration twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rapport.services.ingest.normalise.fhir.catalogue import published
from rapport.services.ingest.normalise.fhir.context import Context, Invalid, _objects
from rapport.services.ingest.normalise.fhir.observation import _observation, _observation_id, panel_instrument
from rapport.services.ingest.normalise.fhir.panel import assemble_panel, member_entries
from rapport.services.ingest.normalise.fhir.response import _questionnaire_response, _response_id
from rapport.services.ingest.normalise.outcome import Draft, Rejection, TenantMapping
from rapport.services.ingest.normalise.reading import shown
from rapport.shared.contracts.problems import Problem
from rapport.shared.contracts.submission import SourceFormat
from rapport.shared.instruments import Instrument, Registry


def normalise_fhir(document: dict[str, Any], tenant: str, registry: Registry,
                   mapping: TenantMapping, now: datetime) -> list[Draft | Rejection]:
    context = Context(tenant, registry, mapping, now, published())
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
    panels = _panels(entries, context)
    members = {m for found in panels.values() for m in member_entries(found[0], context) if m is not None}
    results: list[Draft | Rejection] = []
    for n, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and _is_supporting(resource.get("resourceType")):
            continue  # read for references and answer weights; not a submission, so no answer of its own
        if n in members and n not in panels:
            continue  # an item Observation of a panel: answered with its panel
        if n in panels:
            full_url = entry.get("fullUrl")
            results.append(assemble_panel(n, panels[n][0], panels[n][1], entries, context,
                                          full_url if isinstance(full_url, str) else None))
            continue
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


def _is_supporting(kind: Any) -> bool:
    return isinstance(kind, str) and kind in SUPPORTING


def _index_bundle(entries: list[Any], context: Context) -> None:
    for n, entry in enumerate(entries):
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
        elif kind == "Observation":
            context.observations.update(dict.fromkeys(keys, n))


def _panels(entries: list[Any], context: Context) -> dict[int, tuple[dict[str, Any], Instrument]]:
    """Entry index -> (panel Observation, its instrument) for each panel with hasMember in the Bundle."""
    panels: dict[int, tuple[dict[str, Any], Instrument]] = {}
    for n, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and (instrument := _panel_of(resource, context)) is not None:
            panels[n] = (resource, instrument)
    return panels


def _panel_of(resource: dict[str, Any], context: Context) -> Instrument | None:
    """The instrument of an Observation panel with members (LOINC panel code and a hasMember list)."""
    if resource.get("resourceType") != "Observation" or not _objects(resource.get("hasMember")):
        return None
    code = resource.get("code")
    for coding in _objects(code.get("coding")) if isinstance(code, dict) else []:
        if (instrument := panel_instrument(coding.get("code"), context)) is not None:
            return instrument
    return None


def _resource(resource: dict[str, Any], context: Context, prefix: str, full_url: str | None) -> Draft | Rejection:
    kind = resource.get("resourceType")
    if (panel := _panel_of(resource, context)) is not None:  # outside a Bundle: its members cannot be found
        return assemble_panel(0, resource, panel, [], context, full_url)
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

