"""`rapport up` with the gateway, as the README's curl examples use it: the stack prints the gateway's
URL and writes it under `gateway` in endpoints.json, creates the signing key (0600), `rapport token`
mints a token with it, and a QuestionnaireResponse POSTed with that token is accepted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

FIXTURES = Path(__file__).parents[1] / "fixtures"


def post(url: str, body: bytes, bearer: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {bearer}", "Content-Type": "application/fhir+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def rapport(*args: str, data_dir: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "rapport.cli", *args, "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_rapport_up_starts_the_gateway_and_a_minted_token_submits_through_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    process = subprocess.Popen([sys.executable, "-m", "rapport.cli", "up", "--data-dir", str(data)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Rapport is up" in line:
                break
        else:
            pytest.fail(f"rapport up exited with {process.wait()}: {''.join(lines)}")
        endpoints = json.loads((data / "endpoints.json").read_text())
        gateway = endpoints["gateway"]
        assert isinstance(gateway, str) and gateway.startswith("http://127.0.0.1:")
        assert any(line.startswith("gateway ") and gateway in line for line in lines), lines
        assert endpoints["services"]["gateway"]["url"] == gateway
        assert (data / "token-signing-key.pem").stat().st_mode & 0o777 == 0o600

        bearer = rapport("token", "--tenant", "acme", "--role", "integration", data_dir=data)
        status, outcome = post(f"{gateway}/fhir/QuestionnaireResponse",
                               (FIXTURES / "fhir" / "qr-linkid-loinc.json").read_bytes(), bearer)
        assert status == 201, outcome
        assert outcome["resourceType"] == "OperationOutcome"
        lead = rapport("token", "--tenant", "acme", "--role", "lead", "--ttl", "5m", data_dir=data)
        status, _ = post(f"{gateway}/fhir/QuestionnaireResponse", b"{}", lead)
        assert status == 403
        with urllib.request.urlopen(f"{gateway}/fhir/metadata", timeout=10) as response:
            assert json.loads(response.read())["resourceType"] == "CapabilityStatement"
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
