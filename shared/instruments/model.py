"""The shape of an instrument definition. Every clinical parameter carries where it came from.

Confidence follows ../shared/research/clinical-anchors.md: `verified` (seen in a primary or
authoritative source), `secondary` (secondary source only; have a clinician confirm), `unverified`
(not found in a source; general knowledge of the field, must be checked before clinical use).

Conventions every definition and the scoring code share:

- **Direction.** `better = "lower"`: a lower total is healthier (PHQ-9, CORE-10). `better = "higher"`:
  a higher total is healthier (ORS, SRS, WAI-SR).
- **Caseness.** For lower-is-better instruments a total *at or above* the caseness cutoff is in the
  clinical range (PHQ-9 >= 10). For higher-is-better instruments a total *below* the cutoff is in the
  clinical range (ORS < 25). `concern_cutoff` (alliance) follows the higher-is-better rule: a total
  below it is a possible alliance problem (SRS < 36).
- **Bands.** Listed in ascending order with the bounds as published. A band covers totals from its
  `min` up to, not including, the next band's `min`; the last band also includes its `max`. So a
  prorated or visual-analogue total between two printed integer bands (CORE-10 5.56) belongs to the
  lower band, the same answer the caseness cutoff gives.
- **Critical items are never prorated.** Whatever `missing` allows, an item-level form without an
  answer to a critical item is refused (validation.py): a risk item is read on its own.
- **Responses** are the answer's position on the item's printed scale (0 = first option for a 0-4 item);
  reverse-keyed items are turned round by scoring (`min + max - value`), never by the sender.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Confidence = Literal["verified", "secondary", "unverified"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sourced(Frozen):
    """Mixed into every parameter block: which sources (keys of `sources`) and how sure."""

    source: list[str] = Field(min_length=1)
    confidence: Confidence
    note: str | None = Field(default=None, description="why, or what the sources disagree on")


class Source(Frozen):
    citation: str
    url: str | None = None


class Licence(Sourced):
    status: Literal["public_domain", "free", "licensed"]
    holder: str | None = None
    note: str


class Item(Frozen):
    number: int = Field(ge=1)
    min: float
    max: float
    step: float = Field(default=1, gt=0, description="1 for integer items; 0.1 for visual-analogue scales")
    reverse: bool = False
    scored: bool = True
    loinc: str | None = None
    aliases: list[str] = Field(default_factory=list, description="linkIds seen in the field for this item")
    topic: str | None = Field(default=None, description="what the item is about, never its wording")


class Subscale(Frozen):
    id: str
    title: str
    items: list[int] = Field(min_length=1)


class Structure(Sourced):
    """Where the item map comes from: item count and range, reverse keys, subscales."""


class Scoring(Sourced):
    method: Literal["sum", "mean"]
    multiplier: float = 1.0
    decimals: int = Field(
        default=2, ge=0, le=4,
        description="totals are rounded half-up to this many decimals (0 where the source rounds prorated "
                    "totals to whole points); 2 keeps floating-point error from moving a total across a band edge",
    )


class MissingRule(Sourced):
    rule: Literal["reject", "prorate"]
    max_missing: int = Field(default=0, ge=0, description="how many items may be missing and prorated")


class Band(Frozen):
    min: float
    max: float
    label: str


class Bands(Sourced):
    """Severity bands in ascending order. A band covers its `min` up to the next band's `min`."""

    bands: list[Band] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> Bands:
        for lower, upper in pairwise(self.bands):
            if lower.min > lower.max or upper.min <= lower.max:
                raise ValueError(f"bands {lower.label!r} and {upper.label!r} overlap or are out of order")
        if self.bands[-1].min > self.bands[-1].max:
            raise ValueError(f"band {self.bands[-1].label!r} has min above max")
        return self


class Cutoff(Sourced):
    """A cutoff on the total. Lower-is-better: the clinical range is total >= value. Higher-is-better
    (and every `concern_cutoff`): the clinical range is total < value. See the module docstring."""

    value: float = Field(
        description="lower-is-better: clinical at or above this; higher-is-better: clinical below this"
    )


class ReliableChangeSpec(Sourced):
    """A fixed published value, or SD and reliability from which Jacobson & Truax gives the value."""

    method: Literal["fixed", "jacobson_truax"]
    value: float | None = None
    sd: float | None = None
    reliability: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _complete(self) -> ReliableChangeSpec:
        if self.method == "fixed" and self.value is None:
            raise ValueError("a fixed reliable-change value needs `value`")
        if self.method == "jacobson_truax" and (self.sd is None or self.reliability is None):
            raise ValueError("Jacobson & Truax needs `sd` and `reliability`")
        return self

    def points(self) -> float:
        """The smallest change in raw points that counts as reliable (1.96 × S_diff)."""
        if self.method == "fixed":
            assert self.value is not None
            return self.value
        assert self.sd is not None and self.reliability is not None
        se = self.sd * math.sqrt(1 - self.reliability)
        return 1.96 * math.sqrt(2) * se


class Grading(Sourced):
    """A graded critical item: answers at or above `higher_risk_at` are the higher-risk group the
    sources describe; answers from the item's threshold up to it are a finding of lower risk."""

    higher_risk_at: float


class CriticalItem(Sourced):
    item: int
    threshold: float = Field(description="fires at or above this value")
    label: str
    grading: Grading | None = Field(default=None, description="absent: no source grades the answers")

    def higher_risk(self, value: float) -> bool:
        """Whether a finding at `value` is of the item's higher-risk level (every finding, ungraded)."""
        return self.grading is None or value >= self.grading.higher_risk_at


class Purpose(Sourced):
    """What an instrument is for. A screener says whether to assess further, not how a client changes
    during treatment, so it drives no outcome alerts (critical items still fire, where it has any)."""

    use: Literal["screening", "monitoring"]


CHANGE_RULES = "reliable deterioration, possible sudden loss, the not-on-track checkpoint"


class Coding(Frozen):
    """Codes that identify the instrument in FHIR: LOINC panel and total-score codes, canonical URLs."""

    loinc_panel: str | None = None
    loinc_total: str | None = None
    canonicals: list[str] = Field(default_factory=list)
    answer_codes: dict[str, float] = Field(
        default_factory=dict, description="LOINC answer code -> weight, where the same for every item"
    )
    item_answer_codes: dict[int, dict[str, float]] = Field(
        default_factory=dict,
        description="item number -> {LOINC answer code -> weight} for one item, where an item's answer list "
                    "differs from the common one; read before `answer_codes`, never for another item",
    )
    source: list[str] = Field(default_factory=list)
    confidence: Confidence = "unverified"

    def weights_for(self, item: int) -> dict[str, float]:
        """The LOINC answer codes one item accepts: its own first, then the common ones."""
        return {**self.answer_codes, **self.item_answer_codes.get(item, {})}


class Instrument(Frozen):
    id: str = Field(pattern=r"^[a-z0-9_]{2,32}$")
    title: str
    version: str
    kind: Literal["outcome", "alliance"]
    better: Literal["lower", "higher"] = Field(description="which direction is improvement")
    licence: Licence
    coding: Coding = Coding()
    structure: Structure | None = Field(
        default=None, description="source of the item map: count, range, reverse keys, subscales"
    )
    items: list[Item] = Field(min_length=1)
    subscales: list[Subscale] = Field(default_factory=list)
    scoring: Scoring
    missing: MissingRule
    bands: Bands | None = None
    caseness: Cutoff | None = None
    reliable_change: ReliableChangeSpec | None = None
    critical_items: list[CriticalItem] = Field(default_factory=list)
    concern_cutoff: Cutoff | None = Field(
        default=None, description="alliance: a total below this is a possible alliance problem"
    )
    purpose: Purpose | None = Field(default=None, description="absent: a measure for monitoring change")
    sources: dict[str, Source]
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        numbers = [i.number for i in self.items]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{self.id}: items must be numbered 1..n in order")
        known = set(numbers)
        for sub in self.subscales:
            if not set(sub.items) <= known:
                raise ValueError(f"{self.id}: subscale {sub.id} names unknown items")
        for crit in self.critical_items:
            if crit.item not in known:
                raise ValueError(f"{self.id}: critical item {crit.item} is not an item")
            top = self.items[crit.item - 1].max
            if crit.grading is not None and not crit.threshold < crit.grading.higher_risk_at <= top:
                raise ValueError(f"{self.id}: critical item {crit.item} grades its higher risk at "
                                 f"{crit.grading.higher_risk_at:g}, not above {crit.threshold:g} up to {top:g}")
        for number, codes in self.coding.item_answer_codes.items():
            item = self.item(number)
            if item is None:
                raise ValueError(f"{self.id}: item_answer_codes names item {number}, which is not an item")
            if not codes:
                raise ValueError(f"{self.id}: item_answer_codes for item {number} is empty")
            if outside := sorted(code for code, weight in codes.items() if not item.min <= weight <= item.max):
                raise ValueError(f"{self.id}: item_answer_codes for item {number} weigh {outside} outside the "
                                 f"item's range {item.min:g}-{item.max:g}")
        cited = {key for block in self.sourced_blocks() for key in block.source} | set(self.coding.source)
        if missing := cited - set(self.sources):
            raise ValueError(f"{self.id}: cites undefined sources {sorted(missing)}")
        return self

    def sourced_blocks(self) -> list[Sourced]:
        blocks: list[Sourced | None] = [
            self.licence, self.structure, self.scoring, self.missing, self.bands, self.caseness,
            self.reliable_change, self.concern_cutoff, self.purpose, *self.critical_items,
            *(c.grading for c in self.critical_items),
        ]
        return [b for b in blocks if b is not None]

    @property
    def screener(self) -> bool:
        return self.purpose is not None and self.purpose.use == "screening"

    @property
    def runs_change_rules(self) -> bool:
        """Change-based outcome alerts (CHANGE_RULES) need a reliable-change value: without one no
        improvement counts as reliable, so 'no reliable improvement by session 6' would always hold.
        A screener runs none."""
        return self.kind == "outcome" and self.reliable_change is not None and not self.screener

    @property
    def runs_trajectory_rule(self) -> bool:
        """The expected-trajectory rule compares scores with the clinic's own clients; not on a screener."""
        return self.kind == "outcome" and not self.screener

    def alert_scope(self) -> str:
        """Which alert rules can run on this instrument, and why the others cannot, in one line."""
        risk = f"critical item {', '.join(str(c.item) for c in self.critical_items)}" if self.critical_items else ""
        if self.kind == "alliance":
            return ", ".join(filter(None, [risk, "alliance rupture and repair"]))
        if self.screener:
            return (f"{risk or 'no alerts'}: a screener drives no outcome alerts "
                    f"({CHANGE_RULES}, expected trajectory do not run)")
        runs = [risk]
        if self.runs_change_rules:
            runs.append(CHANGE_RULES)
        runs.append("expected trajectory once fitted")
        scope = ", ".join(filter(None, runs))
        if not self.runs_change_rules:
            scope += f"; not run: {CHANGE_RULES} (no reliable-change value)"
        return scope

    @property
    def scored_items(self) -> list[Item]:
        return [i for i in self.items if i.scored]

    def item(self, number: int) -> Item | None:
        return self.items[number - 1] if 1 <= number <= len(self.items) else None

    @property
    def total_range(self) -> tuple[float, float]:
        scored = self.scored_items
        if self.scoring.method == "sum":
            low, high = sum(i.min for i in scored), sum(i.max for i in scored)
        else:
            low, high = min(i.min for i in scored), max(i.max for i in scored)
        return low * self.scoring.multiplier, high * self.scoring.multiplier

    @property
    def least_confidence(self) -> Confidence:
        order: list[Confidence] = ["unverified", "secondary", "verified"]
        return min((b.confidence for b in self.sourced_blocks()), key=order.index)
