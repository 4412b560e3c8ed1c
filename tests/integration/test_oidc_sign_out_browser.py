"""Single sign-out in a real browser (headless Chromium): a lead signed in with the clinic's identity
provider (the loopback issuer of test_oidc.py, on another origin than the gateway) presses Sign out,
and the browser is taken to the provider's end_session_endpoint with the ID token as hint, then
back to Rapport's signed-out page. Browsers hold a form's redirects to the page's CSP form-action,
so this shows the pages let that one redirect through; afterwards the dashboard asks to sign in.
Screenshot under test-output/browser/<test>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_rig import Screens, chromium, output_dir
from harness import serving
from test_gateway import gateway_settings
from test_oidc import AUDIENCE, CLIENT_ID, issuing

from rapport.embedded_nats import free_port

pytestmark = [pytest.mark.browser, pytest.mark.nats]


async def test_sign_out_in_the_browser_ends_the_session_at_the_provider_and_comes_back(
    sqlite_databases: Any, nats_url: str, tenant: str, key_file: Path, request: pytest.FixtureRequest
) -> None:
    screens = Screens(output_dir(request.node.name))
    database_url = await sqlite_databases.sqlite()
    port = free_port()
    async with issuing() as issuer:
        issuer.user = {"tenant": tenant, "realm_access": {"roles": ["lead"]}}
        issuer.end_session = True
        settings = gateway_settings(database_url, key_file, oidc_issuer=issuer.url, oidc_audience=AUDIENCE,
                                    oidc_role_claim="realm_access.roles", oidc_client_id=CLIENT_ID,
                                    gateway_public_url=f"http://127.0.0.1:{port}")
        async with serving(settings, nats_url, port) as base, chromium() as browser:
            page = await browser.new_page()  # type: ignore[attr-defined]
            await page.goto(f"{base}/sign-in/oidc")  # to the provider and back with a code
            await page.get_by_role("heading", name="Clinical lead dashboard").wait_for()
            assert page.url == f"{base}/"
            await page.get_by_role("button", name="Sign out").click()
            await page.get_by_role("heading", name="Signed out").wait_for()
            assert page.url == f"{base}/signed-out"
            assert [asked["id_token_hint"] for asked in issuer.sign_outs] == [issuer.id_tokens[-1]]
            assert issuer.sign_outs[0]["post_logout_redirect_uri"] == f"{base}/signed-out"
            await screens.shoot(page, "signed-out")
            answer = await page.goto(f"{base}/")
            assert answer.status == 401  # Rapport's session ended too
