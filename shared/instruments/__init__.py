"""The instrument registry: every measure as a data file with its sources (definitions/*.toml)."""

from shared.instruments.model import Instrument
from shared.instruments.registry import Registry, load_registry

__all__ = ["Instrument", "Registry", "load_registry"]
