"""Prometheus metrics every service exposes on /metrics. Labels are tenant, instrument, kind and
subject patterns: never client, clinician or episode ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

messages_received = Counter(
    "rapport_messages_received_total", "Messages taken from the broker", ["service", "subject"], registry=REGISTRY
)
messages_published = Counter(
    "rapport_messages_published_total", "Events acknowledged by the broker", ["service", "type"], registry=REGISTRY
)
messages_failed = Counter(
    "rapport_messages_failed_total",
    "Messages that failed: retried later, or dead-lettered",
    ["service", "subject", "outcome"],
    registry=REGISTRY,
)
faults = Counter(
    "rapport_faults_total", "Failures by kind: transient (consumption paused), poison, defect", ["service", "kind"],
    registry=REGISTRY,
)
consumer_paused = Gauge(
    "rapport_consumer_paused", "1 while a transient fault holds consumption back", ["service", "subject"],
    registry=REGISTRY,
)
consumers_recreated = Counter(
    "rapport_consumers_recreated_total", "Durable consumers found missing on the broker and created again",
    ["service"], registry=REGISTRY,
)
duplicates_ignored = Counter(
    "rapport_duplicates_ignored_total", "Redelivered messages recognised by the inbox", ["service"], registry=REGISTRY
)
batch_seconds = Histogram(
    "rapport_handler_seconds",
    "Time to handle one batch of messages, commit and publish included",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
batch_size = Histogram(
    "rapport_batch_size", "Messages per batch", ["service"], buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
    registry=REGISTRY,
)
submissions = Counter(
    "rapport_submissions_total", "Submissions answered", ["tenant", "instrument", "outcome"], registry=REGISTRY
)
scores = Counter("rapport_scores_total", "Scores computed", ["tenant", "instrument", "band"], registry=REGISTRY)
alert_transitions = Counter(
    "rapport_alert_transitions_total", "Alert lifecycle transitions", ["tenant", "kind", "transition"],
    registry=REGISTRY,
)
outbox_backlog = Gauge(
    "rapport_outbox_unpublished", "Outbox rows not yet published (or not yet cleared), counted by the relay",
    ["service"],
    registry=REGISTRY,
)
alerts_open = Gauge(
    "rapport_alerts_open", "Alerts not yet resolved", ["tenant", "kind", "status"], registry=REGISTRY
)
alerts_oldest_unacknowledged = Gauge(
    "rapport_alerts_oldest_unacknowledged_seconds", "Age of the oldest open, unacknowledged alert",
    ["tenant", "kind"], registry=REGISTRY,
)
