"""FHIR References: the client (subject), the clinician (author) and the episode, resolved within a Bundle."""

from __future__ import annotations

import re
from typing import Any

from rapport.services.ingest.normalise.fhir.context import Bundled, _objects
from rapport.services.ingest.normalise.reading import check_id, shown
from rapport.shared.contracts.problems import Problem

EPISODE_EXTENSION = "http://rapport.dev/fhir/StructureDefinition/episode"
PRACTITIONER = ("Practitioner", "PractitionerRole")
OTHER_AUTHORS = ("Patient", "RelatedPerson", "Device", "Organization")


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

