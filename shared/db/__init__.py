"""Database plumbing shared by the services: the metadata, the engine factory, inbox and outbox tables."""
