"""Everything broker-specific lives in this package, so another FastStream transport can be added
without touching handlers."""
