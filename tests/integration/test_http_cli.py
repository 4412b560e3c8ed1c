"""`rapport submit --http` and `rapport bench --http` as a user runs them, against the real embedded
stack: files sent through the gateway are answered as the broker path prints them, and the bench
sends its load through both doors and reports both. (Figures are measured by the command, never
asserted: this checks that it measures.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

FIXTURES = Path(__file__).parents[1] / "fixtures"


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}


def rapport(*args: str, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rapport.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=timeout, env=environment(), check=False)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    process = subprocess.Popen([sys.executable, "-m", "rapport.cli", "up", "--data-dir", str(data)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment())
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Rapport is up" in line:
                break
        else:
            pytest.fail(f"rapport up exited with {process.wait()}: {''.join(lines)}")
        yield data
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_submit_over_http_prints_each_answer_as_the_broker_path_does(stack: Path) -> None:
    accepted = FIXTURES / "native" / "phq9-complete.json"
    fhir = FIXTURES / "fhir" / "qr-linkid-loinc.json"
    rejected = FIXTURES / "fhir" / "qr-missing-item9.json"
    over_http = rapport("submit", "--http", "--tenant", "clinic-http", str(accepted), str(fhir), str(rejected),
                        data_dir=stack)
    assert over_http.returncode == 1, over_http.stderr  # one file was rejected
    lines = over_http.stdout.splitlines()
    assert lines[:2] == [f"{accepted}:", "  ACCEPTED sub-0001 (phq9, revision 1, new)"], lines
    assert f"{fhir}:" in lines and "  ACCEPTED qr-0001 (phq9, revision 1, new)" in lines
    at = lines.index(f"{rejected}:")
    assert lines[at + 1].startswith("  REJECTED") and lines[at + 2].startswith("    - responses")

    # the same file over the broker, for another tenant: the same answer line
    over_broker = rapport("submit", "--tenant", "clinic-broker", str(accepted), data_dir=stack)
    assert over_broker.returncode == 0, over_broker.stderr
    assert over_broker.stdout.splitlines()[1] == "  ACCEPTED sub-0001 (phq9, revision 1, new)"

    # a resend over HTTP is answered as the first time, and nothing is stored twice
    again = rapport("submit", "--http", "--tenant", "clinic-http", str(accepted), data_dir=stack)
    assert again.returncode == 0 and again.stdout.splitlines()[1] == "  ACCEPTED sub-0001 (phq9, revision 1, new)"


def test_submit_over_http_without_a_running_gateway_says_so(tmp_path: Path) -> None:
    result = rapport("submit", "--http", "--tenant", "acme", str(FIXTURES / "native" / "phq9-complete.json"),
                     data_dir=tmp_path / "nothing")
    assert result.returncode == 2 and "No running gateway" in result.stderr


def test_bench_over_http_sends_the_load_through_both_doors_and_reports_both(tmp_path: Path) -> None:
    result = rapport("bench", "--embedded", "--http", "-n", "80", "--episodes", "20", "--json",
                     data_dir=tmp_path / "data", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    over_http = report["http"]
    assert (report["completed"], report["answered"], over_http["completed"]) == (80, 80, 80)
    assert over_http["statuses"] == {"201": 80}
    assert over_http["latency_ms"]["p99"] is not None and report["answer_latency_ms"]["p99"] is not None
    assert report["http_share_of_broker"] == round(over_http["throughput_per_s"] / report["answers_per_s"], 2)
    assert "gateway" in over_http["cpu_ms_per_submission"]

    paced = rapport("bench", "--embedded", "--http", "-n", "40", "--rate", "40", "--episodes", "20",
                    data_dir=tmp_path / "paced", timeout=300)
    assert paced.returncode == 0, paced.stderr[-2000:]
    assert "HTTP path, POST /api/v1/submissions -> 201: 40/40" in paced.stdout
    assert "HTTP throughput as a share of the broker path's" in paced.stdout
