"""The instrument registry: every measure as a data file with its sources (definitions/*.toml)."""

from rapport.shared.instruments.model import Instrument
from rapport.shared.instruments.registry import Registry, load_registry

__all__ = ["Instrument", "Registry", "load_registry"]
