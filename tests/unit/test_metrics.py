"""Metric labels stay bounded whatever tenants a sender makes up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from rapport.shared.metrics import OTHER_TENANTS, ByTenant, TenantLabels


def test_tenants_beyond_the_limit_share_one_label_and_their_counts_add_up() -> None:
    registry = CollectorRegistry()
    labels = TenantLabels(limit=3)
    counter = Counter("x_total", "x", ["tenant", "outcome"], registry=registry)
    by_tenant = ByTenant(counter, labels)
    for n in range(1000):
        by_tenant.labels(f"made-up-{n}", "rejected").inc()
    by_tenant.labels("made-up-0", "rejected").inc()
    exposed = generate_latest(registry).decode()
    assert exposed.count("x_total{") == 4, "three tenants of their own, one _other"
    assert f'x_total{{outcome="rejected",tenant="{OTHER_TENANTS}"}} 997.0' in exposed
    assert 'x_total{outcome="rejected",tenant="made-up-0"} 2.0' in exposed


def test_a_value_that_is_no_tenant_id_never_becomes_a_label() -> None:
    labels = TenantLabels(limit=10)
    assert labels("Robert Smith") == OTHER_TENANTS
    assert labels("clinic-a") == "clinic-a"
