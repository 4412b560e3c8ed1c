"""`rapport questionnaires list|show|import|mappings|remove`: the published Questionnaires Rapport knows, and
each tenant's own.

`list` prints the catalogue (shared/instruments/questionnaires/: canonical, version, instrument, source) and,
with --tenant, that tenant's imported Questionnaires. `show URL` prints one entry's linkId -> item map and
answer weights. `import FILE.json --tenant T` reads a tenant's own FHIR Questionnaire (its linkIds, item
codes and answer weights), refuses it with every problem when an item cannot be tied to a registry item or
an answer cannot be weighed, and otherwise stores it in ingest's database (ingest_questionnaire_mappings):
ingest reads it with the next batch for that tenant, and only for that tenant. `mappings --tenant T` lists
what T has imported, with each mapping's id and when it came; `remove URL --tenant T` deletes one (its help says
what that changes and what it does not).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from rapport.services.ingest.normalise.fhir.catalogue import CatalogueEntry, load_entries, read_questionnaire
from rapport.services.ingest.normalise.outcome import QuestionnaireMap, TenantMapping, canonical_key, find_form
from rapport.services.ingest.repository import ImportedQuestionnaire, SqlQuestionnaireMappings
from rapport.shared.contracts.tenancy import is_tenant_id
from rapport.shared.db.engine import create_engine, session_factory
from rapport.shared.instruments import load_registry

__all__ = ["QuestionnaireError", "describe_imports", "describe_list", "imports", "load_entries",
           "read_file", "remove", "show", "store", "tenant_forms"]



class QuestionnaireError(Exception):
    """What the operator asked for cannot be done; the message says why (exit 1)."""


async def tenant_forms(url: str, tenant: str) -> list[QuestionnaireMap]:
    _check_tenant(tenant)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            found = await SqlQuestionnaireMappings(session).load([tenant])
    finally:
        await engine.dispose()
    return [form for forms in found.get(tenant, TenantMapping()).forms.values() for form in forms]


async def imports(url: str, tenant: str) -> list[ImportedQuestionnaire]:
    """A tenant's imported Questionnaires with their ids and import times."""
    _check_tenant(tenant)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return (await SqlQuestionnaireMappings(session).imported([tenant])).get(tenant, [])
    finally:
        await engine.dispose()


def describe_imports(found: list[ImportedQuestionnaire], tenant: str) -> str:
    if not found:
        return f"tenant {tenant} has imported no Questionnaire"
    lines = [f"{'canonical':<72} {'version':<9} {'instrument':<10} {'linkIds':>7} {'imported at':<25} id"]
    for i in found:
        lines.append(f"{i.form.canonical:<72} {i.form.version or 'any':<9} {i.form.instrument:<10} "
                     f"{len(i.form.link_ids):>7} {i.imported_at.isoformat(timespec='seconds'):<25} {i.mapping_id}")
    return "\n".join(lines)


async def remove(url: str, tenant: str, reference: str) -> str:
    """Delete the tenant's import named `canonical|version` (a bare canonical: the one imported without a
    version); QuestionnaireError when the tenant has none by that name."""
    found = await imports(url, tenant)
    canonical, _, version = reference.partition("|")
    same = [i for i in found if canonical_key(i.form.canonical) == canonical_key(canonical)]
    chosen = next((i for i in same if (i.form.version or "") == version), None)
    if chosen is None:
        versions = ", ".join(f"{i.form.canonical}|{i.form.version}" if i.form.version else i.form.canonical
                             for i in same)
        raise QuestionnaireError(
            f"tenant {tenant} has no imported Questionnaire {reference}"
            + (f"; it has {versions}: name one as it is listed" if same else
               "; `rapport questionnaires mappings --tenant " + tenant + "` lists what it has"))
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            gone = await SqlQuestionnaireMappings(session).remove(tenant, chosen.mapping_id)
    finally:
        await engine.dispose()
    if not gone:  # removed by someone else between the read and the delete
        raise QuestionnaireError(f"tenant {tenant} has no imported Questionnaire {reference} (already removed)")
    name = chosen.form.canonical + (f"|{chosen.form.version}" if chosen.form.version else "")
    return (f"removed {name} for tenant {tenant}; the next batch ingest reads for it is read without this "
            "mapping, and nothing already accepted changes")


def describe_list(entries: list[CatalogueEntry], imported: list[QuestionnaireMap], tenant: str | None) -> str:
    lines = [f"{'canonical':<96} {'version':<9} {'instrument':<10} source"]
    for e in entries:
        lines.append(f"{e.canonical:<96} {e.version or 'any':<9} {e.instrument:<10} "
                     f"{e.source.url or e.source.citation}{'' if e.confidence == 'verified' else ' (unverified)'}")
    for form in sorted(imported, key=lambda f: (f.canonical, f.version or "")):
        lines.append(f"{form.canonical:<96} {form.version or 'any':<9} {form.instrument:<10} imported by {tenant}")
    return "\n".join(lines)


def describe_form(form: QuestionnaireMap, *, source: str, confidence: str | None = None,
                  note: str | None = None) -> str:
    lines = [f"canonical   {form.canonical}", f"version     {form.version or 'any'}", f"instrument  {form.instrument}",
             f"source      {source}"]
    if confidence is not None:
        lines.append(f"confidence  {confidence}")
    if note:
        lines.append(f"note        {note}")
    lines.append("linkId -> item, answer weights")
    for link_id, number in sorted(form.link_ids.items(), key=lambda kv: (kv[1], kv[0])):
        weights = form.weights.get(link_id, {})
        shown = ", ".join(f"{code}={weight:g}" for code, weight in weights.items()) or \
            "(none stated: LOINC answer codes)"
        lines.append(f"  {link_id:<32} {number:>3}  {shown}")
    return "\n".join(lines)


def show(canonical: str, imported: list[QuestionnaireMap], tenant: str | None) -> str:
    own = find_form(TenantMapping.of_forms(imported).forms, canonical)
    if own is not None:
        return describe_form(own, source=f"imported by {tenant}")
    for entry in load_entries():
        if canonical_key(entry.canonical) == canonical_key(canonical) and (
                entry.version is None or "|" not in canonical or canonical.endswith("|" + entry.version)):
            return describe_form(entry.form(), source=entry.source.url or entry.source.citation,
                                 confidence=entry.confidence, note=entry.note)
    raise QuestionnaireError(f"no catalogued{' or imported' if tenant else ''} Questionnaire has the canonical "
                             f"{canonical}; `rapport questionnaires list` shows those that do")


def read_file(path: Path, instrument: str | None = None) -> QuestionnaireMap:
    """A tenant's Questionnaire file read; QuestionnaireError with every problem when it cannot be."""
    try:
        resource = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise QuestionnaireError(f"{path}: not a JSON file ({type(exc).__name__})") from None
    form = read_questionnaire(resource, load_registry(), instrument)
    if isinstance(form, list):
        problems = "\n".join(f"  {p.field}: {p.code}: {p.message}" + (f" (expected {p.expected})" if p.expected else "")
                             for p in form)
        raise QuestionnaireError(f"{path}: not imported, nothing stored:\n{problems}")
    return form


async def store(url: str, tenant: str, form: QuestionnaireMap) -> str:
    """Store (or replace) a tenant's Questionnaire in ingest's database."""
    _check_tenant(tenant)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            replaced = await SqlQuestionnaireMappings(session).save(tenant, form, datetime.now(UTC))
    finally:
        await engine.dispose()
    return (f"{'replaced' if replaced else 'imported'} {form.canonical}{'|' + form.version if form.version else ''} "
            f"for tenant {tenant}: {form.instrument}, {len(form.link_ids)} linkIds, "
            f"{sum(len(w) for w in form.weights.values())} answer weights; ingest reads it with its next batch")


def _check_tenant(tenant: str) -> None:
    if not is_tenant_id(tenant):
        raise QuestionnaireError(f"{tenant!r} is not a tenant id ([a-z0-9_-]{{1,64}})")
