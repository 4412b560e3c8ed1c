"""Loads every definition file once and answers look-ups by id, LOINC code and canonical URL."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from rapport.shared.instruments.model import Instrument

DEFINITIONS = Path(__file__).parent / "definitions"


class Registry:
    def __init__(self, instruments: list[Instrument]) -> None:
        self._by_id = {i.id: i for i in instruments}
        if len(self._by_id) != len(instruments):
            raise ValueError("two definitions share an instrument id")
        self._by_code: dict[str, Instrument] = {}
        for ins in instruments:
            for code in (ins.coding.loinc_panel, *ins.coding.canonicals):
                if code:
                    self._by_code[_normalise_canonical(code)] = ins

    def __iter__(self) -> Iterator[Instrument]:
        return iter(sorted(self._by_id.values(), key=lambda i: i.id))

    def __contains__(self, instrument_id: object) -> bool:
        return instrument_id in self._by_id

    def get(self, instrument_id: str) -> Instrument | None:
        return self._by_id.get(instrument_id)

    def by_questionnaire(self, reference: str) -> Instrument | None:
        """A Questionnaire canonical URL (with or without `|version`) or a LOINC panel code."""
        return self._by_code.get(_normalise_canonical(reference))

    def by_total_code(self, loinc: str) -> Instrument | None:
        return next((i for i in self._by_id.values() if i.coding.loinc_total == loinc), None)


def _normalise_canonical(reference: str) -> str:
    return reference.split("|", 1)[0].rstrip("/").lower()


def load_definitions(directory: Path = DEFINITIONS) -> list[Instrument]:
    instruments = []
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as f:
            try:
                instruments.append(Instrument.model_validate(tomllib.load(f)))
            except ValueError as exc:
                raise ValueError(f"{path.name}: {exc}") from exc
    return instruments


@lru_cache(maxsize=1)
def load_registry() -> Registry:
    return Registry(load_definitions())
