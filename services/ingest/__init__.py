"""The ingest service: validate, normalise, store, accept or reject."""
