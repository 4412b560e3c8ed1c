"""The registry as a documentation page: every parameter with its confidence and its sources.

`python -m rapport.shared.instruments.docs` rewrites docs/instruments.md from the definition files, so the page
never says something the data does not. A unit test fails when the page is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rapport.shared.instruments.model import Confidence, Instrument, Sourced
from rapport.shared.instruments.registry import Registry, load_registry

MARKS: dict[Confidence, str] = {"verified": "✔ verified", "secondary": "◐ secondary", "unverified": "✖ unverified"}
LICENCES = {"public_domain": "public domain", "free": "free", "licensed": "licensed"}
DEFAULT_PAGE = Path(__file__).resolve().parents[2] / "docs" / "instruments.md"


def render_markdown(registry: Registry) -> str:
    """The whole page: an overview table, then one section per instrument."""
    instruments = list(registry)
    lines = [
        "# Instrument registry",
        "",
        "Generated from `shared/instruments/definitions/*.toml` by `python -m rapport.shared.instruments.docs`;"
        " do not edit by hand.",
        "",
        "Confidence marks follow `research/clinical-anchors.md`: **✔ verified** (seen in a primary or"
        " authoritative source), **◐ secondary** (secondary sources only; have a clinician confirm),"
        " **✖ unverified** (not found in a source; check before clinical use). Nothing here is clinical"
        " advice: thresholds that drive alerts need the clinical lead's sign-off.",
        "",
        "Conventions: for lower-is-better instruments a total at or above the caseness cutoff is in the"
        " clinical range; for higher-is-better instruments a total below it is (and an alliance total below"
        " the concern cutoff is a possible alliance problem). A band covers its lower bound up to the next"
        " band's lower bound. Responses are positions on the printed scale; reverse-keyed items are turned"
        " round by scoring. Fixed reliable-change values count at or beyond the value; Jacobson & Truax"
        " values must be exceeded. A critical (risk) item is never prorated: an item-level form without"
        " an answer to it is refused, whatever the instrument's missing-item rule. Change-based alert rules"
        " (reliable deterioration, possible sudden loss, the not-on-track checkpoint) run only on outcome"
        " measures with a reliable-change value, and no outcome alert runs on a screener.",
        "",
        "## Instruments",
        "",
        "| id | title | kind | items | total range | better | licence | least confidence | unverified |"
        " change-based alerts |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ins in instruments:
        low, high = ins.total_range
        unverified = ", ".join(row[0] for row in _rows(ins) if row[4] == "unverified") or "none"
        lines.append(
            f"| [{ins.id}](#{ins.id}) | {_cell(ins.title)} | {ins.kind} | {len(ins.scored_items)} | "
            f"{low:g}–{high:g} | {ins.better} | {LICENCES[ins.licence.status]} | {MARKS[ins.least_confidence]} | "
            f"{unverified} | {_change_rules(ins)} |"
        )
    for ins in instruments:
        lines += ["", *_section(ins)]
    return "\n".join(lines) + "\n"


def _change_rules(ins: Instrument) -> str:
    if ins.kind != "outcome":
        return "n/a (alliance)"
    if ins.screener:
        return "no (screener)"
    return "yes" if ins.runs_change_rules else "no (no reliable-change value)"


def _section(ins: Instrument) -> list[str]:
    low, high = ins.total_range
    lines = [
        f'<a id="{ins.id}"></a>',
        f"## {ins.id}: {ins.title}",
        "",
        f"Version {ins.version}; {ins.kind}; total {low:g}–{high:g}; {ins.better} is better.",
        "",
        f"Alert rules: {ins.alert_scope()}.",
        "",
        "| parameter | value | confidence | sources |",
        "|---|---|---|---|",
    ]
    notes: list[str] = []
    for name, value, block, sources, confidence in _rows(ins):
        lines.append(f"| {name} | {_cell(value)} | {MARKS[confidence]} | {', '.join(sources)} |")
        if block is not None and block.note:
            notes.append(f"- *{name}*: {block.note}")
    if ins.subscales:
        lines += ["", "Subscales (scored like the total):", ""]
        lines += [f"- `{sub.id}` {sub.title}: items {', '.join(map(str, sub.items))}" for sub in ins.subscales]
    if notes:
        lines += ["", "Parameter notes:", "", *notes]
    if ins.notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in ins.notes)]
    lines += ["", *_items(ins), "", "Sources:", ""]
    for key, source in sorted(ins.sources.items()):
        url = f" <{source.url}>" if source.url else ""
        lines.append(f"- **{key}** {source.citation}.{url}")
    return lines


Row = tuple[str, str, "Sourced | None", list[str], Confidence]


def _rows(ins: Instrument) -> list[Row]:
    """(parameter, value, block, sources, confidence) for every parameter the definition has."""
    rows: list[Row] = []
    licence = ins.licence
    rows.append(("licence", ", ".join(filter(None, [LICENCES[licence.status], licence.holder])), licence,
                 licence.source, licence.confidence))
    coding = ins.coding
    if any((coding.loinc_panel, coding.loinc_total, coding.canonicals, coding.answer_codes, coding.item_answer_codes)):
        rows.append(("coding", _coding(ins), None, ins.coding.source, ins.coding.confidence))
    if ins.structure is not None:
        rows.append(("item map", _structure(ins), ins.structure, ins.structure.source, ins.structure.confidence))
    scoring = ins.scoring
    method = "sum" if scoring.method == "sum" else "mean"
    if scoring.multiplier != 1:
        method += f" × {scoring.multiplier:g}"
    rows.append(("scoring", f"{method}; rounded to {scoring.decimals} decimal(s)", scoring, scoring.source,
                 scoring.confidence))
    missing = ins.missing
    rule = ("every scored item required" if missing.rule == "reject"
            else f"prorate up to {missing.max_missing} missing item(s)")
    if missing.rule == "prorate" and ins.critical_items:
        rule += f", never critical item {', '.join(str(c.item) for c in ins.critical_items)} (refused without it)"
    rows.append(("missing items", rule, missing, missing.source, missing.confidence))
    if ins.bands is not None:
        bands = "; ".join(f"{b.min:g}–{b.max:g} {b.label}" for b in ins.bands.bands)
        rows.append(("bands", bands, ins.bands, ins.bands.source, ins.bands.confidence))
    if ins.caseness is not None:
        sign = "≥" if ins.better == "lower" else "<"
        rows.append(("caseness", f"{sign} {ins.caseness.value:g}", ins.caseness, ins.caseness.source,
                     ins.caseness.confidence))
    if (spec := ins.reliable_change) is not None:
        if spec.method == "fixed":
            value = f"{spec.points():g} points (fixed; counts at or beyond)"
        else:
            value = (f"{spec.points():.2f} points (Jacobson & Truax from SD {spec.sd:g}, reliability "
                     f"{spec.reliability:g}; must be exceeded)")
        rows.append(("reliable change", value, spec, spec.source, spec.confidence))
    for crit in ins.critical_items:
        rows.append((f"critical item {crit.item}", f"≥ {crit.threshold:g}: {crit.label}", crit, crit.source,
                     crit.confidence))
        if (grading := crit.grading) is not None:
            rows.append((f"critical item {crit.item} grading", f"≥ {grading.higher_risk_at:g}: higher-risk level; "
                         f"{crit.threshold:g} up to it: lower-risk finding", grading, grading.source,
                         grading.confidence))
    if ins.concern_cutoff is not None:
        rows.append(("alliance concern", f"< {ins.concern_cutoff.value:g}", ins.concern_cutoff,
                     ins.concern_cutoff.source, ins.concern_cutoff.confidence))
    if (purpose := ins.purpose) is not None:
        rows.append(("purpose", purpose.use, purpose, purpose.source, purpose.confidence))
    return rows


def _coding(ins: Instrument) -> str:
    parts = []
    if ins.coding.loinc_panel:
        parts.append(f"LOINC panel {ins.coding.loinc_panel}")
    if ins.coding.loinc_total:
        parts.append(f"total {ins.coding.loinc_total}")
    if ins.coding.answer_codes:
        parts.append("answer codes " + ", ".join(f"{code} = {w:g}" for code, w in ins.coding.answer_codes.items()))
    for number, codes in sorted(ins.coding.item_answer_codes.items()):
        parts.append(f"item {number} also " + ", ".join(f"{code} = {w:g}" for code, w in codes.items()))
    return "; ".join(parts)


def _structure(ins: Instrument) -> str:
    scored = ins.scored_items
    ranges = sorted({(i.min, i.max, i.step) for i in scored})
    scale = ", ".join(f"{lo:g}–{hi:g}" + (f" in steps of {step:g}" if step != 1 else "") for lo, hi, step in ranges)
    reverse = [str(i.number) for i in ins.items if i.reverse]
    text = f"{len(scored)} scored items, {scale}; reverse-keyed: {', '.join(reverse) or 'none'}"
    if unscored := [str(i.number) for i in ins.items if not i.scored]:
        text += f"; unscored: {', '.join(unscored)}"
    return text


def _items(ins: Instrument) -> list[str]:
    lines = ["| item | range | reverse | scored | LOINC | topic |", "|---|---|---|---|---|---|"]
    for item in ins.items:
        step = f" (step {item.step:g})" if item.step != 1 else ""
        lines.append(
            f"| {item.number} | {item.min:g}–{item.max:g}{step} | {'yes' if item.reverse else ''} | "
            f"{'' if item.scored else 'no'} | {item.loinc or ''} | {_cell(item.topic or '')} |"
        )
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_page(path: Path = DEFAULT_PAGE, registry: Registry | None = None) -> Path:
    path.write_text(render_markdown(registry or load_registry()), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_page(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PAGE)}")
