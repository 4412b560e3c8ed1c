"""Prometheus metrics every service exposes on /metrics. Labels are tenant, instrument, kind and
subject patterns: never client, clinician or episode ids. Tenant label values are bounded: anyone
who can publish can name a tenant, so a process labels at most `metrics_max_tenants` of them and
counts the rest under `_other` (1,000 made-up tenants once grew /metrics from 6 KB to 199 KB)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rapport.shared.contracts.tenancy import is_tenant_id

REGISTRY = CollectorRegistry(auto_describe=True)
OTHER_TENANTS = "_other"


class TenantLabels:
    """The first `limit` tenants seen get a label value of their own; the others share `_other`."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._labelled: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._labelled:
            return tenant
        if len(self._labelled) < self.limit and is_tenant_id(tenant):
            self._labelled.add(tenant)
            return tenant
        return OTHER_TENANTS

    def forget(self) -> None:
        """Back to no tenant labelled, as in a fresh process (tests running many tenants in one)."""
        self._labelled.clear()


tenant_label = TenantLabels()
M = TypeVar("M", Counter, Gauge)


class ByTenant(Generic[M]):
    """A metric whose first label is the tenant, passed through `tenant_label`."""

    def __init__(self, metric: M, tenants: TenantLabels = tenant_label) -> None:
        self.metric: M = metric
        self.tenants = tenants

    def labels(self, tenant: str, *rest: Any) -> Any:
        return self.metric.labels(self.tenants(tenant), *rest)

    def clear(self) -> None:
        self.metric.clear()

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
submissions = ByTenant(Counter(
    "rapport_submissions_total", "Submissions answered", ["tenant", "instrument", "outcome"], registry=REGISTRY
))
attendance = ByTenant(Counter(
    "rapport_attendance_total", "Appointments and encounters answered", ["tenant", "status", "outcome"],
    registry=REGISTRY
))
scores = ByTenant(Counter("rapport_scores_total", "Scores computed", ["tenant", "instrument", "band"],
                          registry=REGISTRY))
alert_transitions = ByTenant(Counter(
    "rapport_alert_transitions_total", "Alert lifecycle transitions", ["tenant", "kind", "transition"],
    registry=REGISTRY,
))
outbox_backlog = Gauge(
    "rapport_outbox_unpublished", "Outbox rows not yet published (or not yet cleared), counted by the relay",
    ["service"],
    registry=REGISTRY,
)
alerts_open = ByTenant(Gauge(
    "rapport_alerts_open", "Alerts not yet resolved", ["tenant", "kind", "status"], registry=REGISTRY
))
alerts_oldest_unacknowledged = ByTenant(Gauge(
    "rapport_alerts_oldest_unacknowledged_seconds", "Age of the oldest open, unacknowledged alert",
    ["tenant", "kind"], registry=REGISTRY,
))
