"""Sign-in links, sessions and the audit trail over real HTTP on the real gateway, on SQLite and
PostgreSQL: a link signs in once and never again; an expired, tampered or foreign link signs nobody
in and is recorded; the session cookie is HttpOnly and SameSite=Lax and stands for the same principal
a bearer token does; a POST with the session cookie needs the session's CSRF token; only an admin
reads the tenant's audit trail (API and `rapport audit`), and its rows cannot be changed."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dashboard_rig import bearer, gateway_settings, link, serving, signing_key
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from rapport.services.gateway.signin import COOKIE
from rapport.shared.db.engine import create_engine

pytestmark = pytest.mark.nats


@asynccontextmanager
async def browser(base: str) -> AsyncIterator[httpx.AsyncClient]:
    """Like a browser: keeps cookies, does not follow redirects on its own (the tests look at them)."""
    async with httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=False) as http:
        yield http


async def open_link(http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.get(url.removeprefix(str(http.base_url).rstrip("/")))


def tampered(url: str, **claims: str) -> str:
    """The link with its payload rewritten and the signature kept."""
    base, _, token = url.partition("?link=")
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    return f"{base}?link={header}.{forged}.{signature}"


async def audit_rows(base: str, admin_token: str, **query: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        answer = await http.get("/api/v1/audit", params=query, headers={"Authorization": f"Bearer {admin_token}"})
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, object]] = answer.json()["entries"]
    return entries


async def test_a_sign_in_link_opens_a_session_once_and_is_refused_the_second_time(
    database_url: str, fresh_stream: str, tenant: str, tmp_path: Path
) -> None:
    key = signing_key(tmp_path)
    async with serving(gateway_settings(database_url, key), fresh_stream) as base:
        url = link(base, key, tenant, "clinician", clinician="clin-07")
        async with browser(base) as first:
            opened = await open_link(first, url)
            assert opened.status_code == 303 and opened.headers["location"] == "/"
            cookie = opened.headers["set-cookie"]
            assert cookie.startswith(f"{COOKIE}=")
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
            assert "Secure" not in cookie  # plain HTTP on loopback; Secure when the request came over TLS
            page = await first.get("/")
            assert page.status_code == 200
            assert 'data-testid="tenant">' + tenant in page.text and "clin-07" in page.text
        async with browser(base) as second:
            again = await open_link(second, url)
            assert again.status_code == 401
            assert "cannot be used" in again.text and "set-cookie" not in again.headers
            assert (await second.get("/")).status_code == 401
        admin = bearer(key, tenant, "admin")
        rows = await audit_rows(base, admin, action="sign_in")
        assert [(r["outcome"], r["detail"], r["subject"], r["credential"]) for r in rows] == [
            (401, "link_used", "clin-07", "link"), (303, None, "clin-07", "link")]
        assert all(r["client_address"] == "127.0.0.1" and r["tenant"] == tenant for r in rows)


async def test_expired_tampered_foreign_and_bearer_links_sign_nobody_in(
    database_url: str, fresh_stream: str, tenant: str, tmp_path: Path
) -> None:
    key = signing_key(tmp_path)
    other_stack = signing_key(tmp_path / "other")
    async with serving(gateway_settings(database_url, key), fresh_stream) as base:
        refused = {
            "expired": link(base, key, tenant, "lead", now=datetime.now(UTC) - timedelta(minutes=11)),
            "another tenant written in": tampered(link(base, key, tenant, "clinician", clinician="c1"),
                                                  tenant="victim"),
            "a lead made admin": tampered(link(base, key, tenant, "lead"), role="admin"),
            "from another stack": link(base, other_stack, tenant, "admin"),
            "a bearer token": f"{base}/sign-in?link={bearer(key, tenant, 'admin')}",
            "no link": f"{base}/sign-in",
        }
        for why, url in refused.items():
            async with browser(base) as http:
                answer = await open_link(http, url)
                assert answer.status_code == 401, why
                assert COOKIE not in answer.headers.get("set-cookie", ""), why
        rows = await audit_rows(base, bearer(key, tenant, "admin"), action="sign_in")
        # only the expired link's claims could be believed: the other refusals have no tenant to be listed under
        assert [(r["outcome"], r["detail"], r["role"]) for r in rows] == [(401, "link_expired", "lead")]
        async with browser(base) as http:  # a bearer token is never a link, and a link never a bearer token
            token = refused["expired"].partition("?link=")[2]
            assert (await http.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})).status_code == 401


async def test_the_session_stands_for_the_principal_and_posts_need_its_csrf_token(
    database_url: str, fresh_stream: str, tenant: str, tmp_path: Path
) -> None:
    key = signing_key(tmp_path)
    async with serving(gateway_settings(database_url, key), fresh_stream) as base:
        async with browser(base) as admin:
            assert (await open_link(admin, link(base, key, tenant, "admin"))).status_code == 303
            listed = await admin.get("/api/v1/audit")
            assert listed.status_code == 200
            [sign_in] = [e for e in listed.json()["entries"] if e["action"] == "sign_in"]
            assert sign_in["subject"] == f"admin@{tenant}" and sign_in["role"] == "admin"

            assert (await admin.post("/sign-out")).status_code == 403  # no token
            forged = await admin.post("/sign-out", data={"csrf_token": "0" * 64})
            assert forged.status_code == 403
            assert (await admin.get("/api/v1/audit")).status_code == 200  # still signed in
            page = await admin.get("/audit")
            csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            out = await admin.post("/sign-out", data={"csrf_token": csrf})
            assert out.status_code == 303 and out.headers["location"] == "/signed-out"
            assert (await admin.get("/api/v1/audit")).status_code == 401  # the row is gone, not only the cookie

        rows = await audit_rows(base, bearer(key, tenant, "admin"))
        said = [(r["action"], r["outcome"], r["detail"]) for r in reversed(rows)]
        assert ("sign_out", 403, "csrf") in said and ("sign_out", 303, None) in said
        assert said.count(("sign_out", 403, "csrf")) == 2


async def test_only_an_admin_reads_the_audit_trail_and_only_of_their_tenant(
    database_url: str, fresh_stream: str, tenant: str, tmp_path: Path
) -> None:
    key = signing_key(tmp_path)
    async with serving(gateway_settings(database_url, key), fresh_stream) as base:
        other = f"{tenant}x"
        async with browser(base) as clinician, browser(base) as elsewhere:
            await open_link(clinician, link(base, key, tenant, "clinician", clinician="clin-01"))
            await open_link(elsewhere, link(base, key, other, "admin"))
            assert (await clinician.get("/api/v1/audit")).status_code == 403
            page = await clinician.get("/audit")
            assert page.status_code == 403 and "Not for your role" in page.text
            assert (await elsewhere.get("/api/v1/audit")).json()["entries"][0]["tenant"] == other
        async with httpx.AsyncClient(base_url=base, timeout=30) as anonymous:
            assert (await anonymous.get("/api/v1/audit")).status_code == 401
            lead = {"Authorization": f"Bearer {bearer(key, tenant, 'lead')}"}
            assert (await anonymous.get("/api/v1/audit", headers=lead)).status_code == 403

        admin = bearer(key, tenant, "admin")
        rows = await audit_rows(base, admin)
        assert {r["tenant"] for r in rows} == {tenant}
        refusals = [(r["action"], r["subject"], r["outcome"], r["detail"]) for r in rows if r["outcome"] == 403]
        assert ("read_audit", "clin-01", 403, "forbidden") in refusals
        assert ("read_audit", f"lead@{tenant}", 403, "forbidden") in refusals
        assert [r["subject"] for r in await audit_rows(base, admin, subject="clin-01", action="sign_in")] == ["clin-01"]
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            paged = (await http.get("/api/v1/audit", params={"limit": "2"},
                                    headers={"Authorization": f"Bearer {admin}"})).json()
            assert len(paged["entries"]) == 2 and paged["next"]
            later = (await http.get("/api/v1/audit", params={"limit": "2", "cursor": paged["next"]},
                                    headers={"Authorization": f"Bearer {admin}"})).json()
            assert later["entries"] and max(e["id"] for e in later["entries"]) < min(e["id"] for e in paged["entries"])
            bad = await http.get("/api/v1/audit", params={"since": "yesterday"},
                                 headers={"Authorization": f"Bearer {admin}"})
            assert bad.status_code == 400


async def test_audit_rows_cannot_be_changed_or_deleted_and_rapport_audit_lists_them(
    database_url: str, fresh_stream: str, tenant: str, tmp_path: Path
) -> None:
    key = signing_key(tmp_path)
    async with serving(gateway_settings(database_url, key), fresh_stream) as base, browser(base) as http:
        await open_link(http, link(base, key, tenant, "lead"))
    engine = create_engine(database_url)
    try:
        for statement in ("UPDATE gateway_audit SET outcome = 200", "DELETE FROM gateway_audit"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as connection:
                    await connection.execute(text(statement))
    finally:
        await engine.dispose()
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "rapport.cli", "audit", "--tenant", tenant, "--since", "1h", "--json"],
        capture_output=True, text=True, timeout=60, env={"RAPPORT_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"})
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["action"], row["subject"], row["outcome"]) == ("sign_in", f"lead@{tenant}", 303)


@pytest.mark.e2e
def test_rapport_login_link_prints_a_url_on_the_running_stack_that_signs_in(tmp_path: Path) -> None:
    import os
    import signal

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    process = subprocess.Popen([sys.executable, "-m", "rapport.cli", "up", "--data-dir", str(data)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Rapport is up" in line:
                break
        else:
            pytest.fail(f"rapport up exited with {process.wait()}: {''.join(lines)}")
        gateway = json.loads((data / "endpoints.json").read_text())["gateway"]
        made = subprocess.run([sys.executable, "-m", "rapport.cli", "login-link", "--tenant", "acme", "--role",
                               "clinician", "--clinician", "clin-01", "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=60, env=env)
        assert made.returncode == 0, made.stderr
        url = made.stdout.strip()
        assert url.startswith(f"{gateway}/sign-in?link=")
        with httpx.Client(timeout=30, follow_redirects=False) as http:
            opened = http.get(url)
            assert opened.status_code == 303 and COOKIE in opened.headers["set-cookie"]
            assert http.get(f"{gateway}/").status_code == 200
            assert http.get(url).status_code == 401
        refused = subprocess.run([sys.executable, "-m", "rapport.cli", "login-link", "--tenant", "acme", "--role",
                                  "clinician", "--data-dir", str(data)], capture_output=True, text=True, timeout=60,
                                 env=env)
        assert refused.returncode == 2 and "--clinician" in refused.stderr
        trail = subprocess.run([sys.executable, "-m", "rapport.cli", "audit", "--tenant", "acme", "--data-dir",
                                str(data)], capture_output=True, text=True, timeout=60, env=env)
        assert trail.returncode == 0, trail.stderr
        assert "sign_in" in trail.stdout and "link_used" in trail.stdout and "clin-01" in trail.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


async def test_an_audit_row_written_in_a_transaction_commits_and_rolls_back_with_it(database_url: str) -> None:
    from rapport.services.gateway.audit import AuditFilters, AuditTrail
    from rapport.services.gateway.tokens import Principal
    from rapport.shared.db.engine import session_factory

    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        trail = AuditTrail(sessions)
        who = Principal(tenant="acme", role="clinician", subject="clin-05", clinician="clin-05")

        class WorkFailed(Exception):
            pass

        with pytest.raises(WorkFailed):
            async with sessions() as session, session.begin():
                await trail.record(action="resolve_alert", outcome=200, principal=who, resource="alert/a-1",
                                   session=session)
                raise WorkFailed
        async with sessions() as session, session.begin():
            await trail.record(action="acknowledge_alert", outcome=200, principal=who, resource="alert/a-2",
                               session=session)
        await trail.record(action="read_alerts", outcome=200, principal=who, resource="client/c-1/episode/e-1")
        found = await trail.entries(AuditFilters(tenant="acme"))
        assert [(e.action, e.resource) for e in found] == [
            ("read_alerts", "client/c-1/episode/e-1"), ("acknowledge_alert", "alert/a-2")]
        assert [e.resource for e in await trail.entries(AuditFilters(tenant="acme", resource="client/c-1"))] == [
            "client/c-1/episode/e-1"]
        assert await trail.entries(AuditFilters(tenant="acme", resource="client/c")) == []
    finally:
        await engine.dispose()
