"""The tenant registry (rapport/tenants.py): a seed per tenant, private and never replaced; the broker's
authorization block built from it; concurrent first uses giving each tenant one user."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from rapport.shared.settings import Settings
from rapport.tenants import (
    TenantRegistry,
    add_command,
    add_tenant,
    client_settings,
    list_command,
    services_seed,
    write_users_config,
)


def test_a_tenant_gets_a_private_seed_that_a_second_add_keeps(tmp_path: Path) -> None:
    registry = TenantRegistry.of(tmp_path)
    first = registry.add("acme")
    assert stat.S_IMODE(first.seed_file.stat().st_mode) == 0o600
    assert first.public_key.startswith("U")
    assert registry.add("acme") == first, "replacing the seed would lock the clinic system out"
    assert registry.find("beta") is None
    assert [user.tenant for user in registry.users()] == ["acme"]


@pytest.mark.parametrize("tenant", ["Acme", "acme.>", "a*", "", "x" * 65, "../etc"])
def test_a_name_that_is_not_a_tenant_id_is_refused(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(ValueError, match="not a tenant id"):
        TenantRegistry.of(tmp_path).add(tenant)
    assert not list((tmp_path / "tenants").glob("*.nk")) if (tmp_path / "tenants").exists() else True


def test_the_printed_entry_names_only_the_tenants_subjects_and_never_the_seed(tmp_path: Path) -> None:
    text = add_command("acme", tmp_path)
    seed = (tmp_path / "tenants" / "acme.nk").read_text().strip()
    assert seed not in text, "the seed is the secret: never printed"
    assert ('publish: { allow: ["rapport.acme.in.submissions", "rapport.acme.in.attendance", '
            '"rapport.acme.in.alert-commands"] }') in text
    assert 'subscribe: { allow: ["rapport.acme.>", "_INBOX_acme.>"] }' in text
    assert "questionnaire-mappings" not in text, "an admin's, through the gateway and its audit trail"
    assert "added" in text and "lets it in from the next `rapport up`" in text
    assert "already registered" in add_command("acme", tmp_path)
    listed = list_command(tmp_path, as_json=False)
    assert "acme" in listed and seed not in listed


def test_the_users_file_holds_the_services_user_and_each_tenant_with_its_permissions(tmp_path: Path) -> None:
    registry = TenantRegistry.of(tmp_path)
    acme, beta = registry.add("acme"), registry.add("beta")
    text = write_users_config(tmp_path).read_text()
    services = services_seed(tmp_path)
    assert stat.S_IMODE(services.stat().st_mode) == 0o600
    assert services.read_text().strip() not in text and acme.seed_file.read_text().strip() not in text
    lines = [line.strip() for line in text.splitlines() if "nkey:" in line]
    assert len(lines) == 3
    assert "permissions" not in lines[0], "the services' user has every permission"
    assert acme.public_key in lines[1] and '"rapport.acme.in.submissions"' in lines[1] and "beta" not in lines[1]
    assert beta.public_key in lines[2] and '"rapport.beta.in.submissions"' in lines[2] and "acme" not in lines[2]


def test_commands_sign_in_as_the_tenant_on_the_embedded_stack_and_as_configured_elsewhere(tmp_path: Path) -> None:
    embedded = client_settings(Settings(data_dir=tmp_path), "clinic-7")
    assert embedded.broker_nkey_seed_file == (tmp_path / "tenants" / "clinic-7.nk").resolve()
    assert embedded.broker_inbox_prefix == "_INBOX_clinic-7"
    operator = client_settings(Settings(data_dir=tmp_path))
    assert operator.broker_nkey_seed_file == (tmp_path / "broker-services.nk").resolve()
    assert operator.broker_inbox_prefix is None
    external = Settings(data_dir=tmp_path, broker_url="nats://broker.clinic.example:4222", broker_user="rapport",
                        broker_password="not-a-real-password")
    assert client_settings(external, "clinic-7") is external, "an external broker's sign-in is its operator's"


def test_first_uses_at_once_give_every_tenant_exactly_one_user(tmp_path: Path) -> None:
    tenants = [f"tenant-{n:02d}" for n in range(12)] * 2
    users: list[str] = []
    barrier = threading.Barrier(len(tenants))

    def first_use(tenant: str) -> None:
        barrier.wait()
        users.append(add_tenant(tmp_path, tenant)[0].public_key)

    threads = [threading.Thread(target=first_use, args=(t,)) for t in tenants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(users) == 24 and len(set(users)) == 12
    assert sorted(u.public_key for u in TenantRegistry.of(tmp_path).users()) == sorted(set(users))
