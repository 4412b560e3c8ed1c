"""`rapport up` as a user runs it: three service processes and the embedded NATS, `rapport submit`
against it, and SIGTERM stopping everything with nothing accepted lost across a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nats
import pytest
from harness import rapport_up

from rapport.shared.messaging.broker import connect_client
from rapport.shared.settings import Settings
from rapport.tenants import client_settings

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

PHQ9 = {
    "submission_id": "stack-0001", "instrument": "phq9", "client_id": "client-0100", "episode_id": "ep-0100",
    "clinician_id": "clinician-07", "administered_at": "2026-03-02T10:00:00+00:00",
    "responses": {"1": 3, "2": 3, "3": 2, "4": 2, "5": 1, "6": 2, "7": 1, "8": 1, "9": 2},
}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_submit_prints_the_answer_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    submission = tmp_path / "phq9.json"
    submission.write_text(json.dumps(PHQ9))
    with rapport_up(tmp_path / "data") as (process, endpoints):
        pids = [int(s["pid"]) for s in endpoints["services"].values()]  # type: ignore[attr-defined]
        result = subprocess.run(
            [sys.executable, "-m", "rapport.cli", "submit", str(submission), "--tenant", "clinic-a",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ACCEPTED stack-0001 (phq9, revision 1, new)" in result.stdout
        assert "score 17 (0-27), band moderately severe" in result.stdout
        assert "critical item 9 = 2" in result.stdout
        assert "alert raised: critical_item (critical)" in result.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert not [pid for pid in pids if alive(pid)], "no service process outlives rapport up"
    assert not (tmp_path / "data" / "endpoints.json").exists()
    nats_pid = subprocess.run(["pgrep", "-f", "--", str(tmp_path / "data" / "nats-server.conf")],
                              capture_output=True, text=True)
    assert nats_pid.stdout.strip() == "", "the embedded NATS stops with the stack"


def test_a_service_killed_under_the_stack_is_restarted(tmp_path: Path) -> None:
    """The supervisor notices the exit, restarts the service after its delay, and endpoints.json
    names the new process."""
    data = tmp_path / "data"
    with rapport_up(data) as (process, endpoints):
        services = endpoints["services"]  # type: ignore[index]
        old_pid = int(services["scoring"]["pid"])  # type: ignore[index]
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        new_pid = old_pid
        while new_pid == old_pid and time.monotonic() < deadline:
            time.sleep(0.2)  # polling a file another process writes, bounded by the deadline
            current = json.loads((data / "endpoints.json").read_text())
            new_pid = int(current["services"]["scoring"]["pid"])
        assert new_pid != old_pid, "scoring was not restarted within 60 s"
        assert alive(new_pid) and process.poll() is None
        url = current["services"]["scoring"]["url"]
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the restarted scoring service did not become ready within 60 s")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert not alive(new_pid)


async def _publish(url: str, data_dir: Path, tenant: str, count: int) -> None:
    """As the tenant's clinic system would: signed in as its user (registered here, on first use)."""
    client = await connect_client(client_settings(Settings(data_dir=data_dir), tenant), url, name="clinic-b")
    js = client.jetstream()
    for n in range(count):
        body = dict(PHQ9, submission_id=f"restart-{n:04d}", client_id=f"client-{n % 20:04d}",
                    episode_id=f"ep-{n % 20:04d}", administered_at=f"2026-03-{n // 20 + 1:02d}T10:00:00+00:00")
        body["responses"] = dict(PHQ9["responses"], **{"9": 0})  # type: ignore[arg-type]
        await js.publish(f"rapport.{tenant}.in.submissions", json.dumps(body).encode(),
                         headers={"Nats-Msg-Id": f"restart-{n}"})
    await client.close()


async def _evaluated(url: str, data_dir: Path, tenant: str, count: int) -> set[str]:
    """Every evaluation.completed in the stream, replayed from its start (the JetStream API: as the
    services' user, which an operator has), until `count` are seen."""
    client = await connect_client(client_settings(Settings(data_dir=data_dir)), url, name="operator")
    seen: set[str] = set()
    done = asyncio.Event()

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        seen.add(json.loads(msg.data)["data"]["submission_id"])
        if len(seen) >= count:
            done.set()

    await client.jetstream().subscribe(f"rapport.{tenant}.evaluation.completed", cb=on_event, ordered_consumer=True)
    try:
        await asyncio.wait_for(done.wait(), 90)
    finally:
        await client.close()
    return seen


def test_submissions_in_flight_at_sigterm_are_all_evaluated_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with rapport_up(data) as (process, endpoints):
        asyncio.run(_publish(str(endpoints["broker_url"]), data, "clinic-b", 300))
        process.send_signal(signal.SIGTERM)  # while the services are still working through them
        assert process.wait(60) == 0
    with rapport_up(data) as (_process, endpoints):
        seen = asyncio.run(_evaluated(str(endpoints["broker_url"]), data, "clinic-b", 300))
    assert seen == {f"restart-{n:04d}" for n in range(300)}


def test_evaluate_scores_every_rule_against_the_planted_cohort(tmp_path: Path) -> None:
    """`rapport evaluate` as a user runs it, small: the planted risk items, ruptures, deteriorations and
    stalls are all found, and the expected-trajectory rule is fitted and scored."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "rapport.cli", "evaluate", "--clients", "12", "--history-clients", "120", "--json",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)  # --json: nothing but the report on stdout
    rules = report["rules"]
    assert set(rules) == {"critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track",
                          "expected_trajectory"}
    for rule in ("critical_item", "alliance_rupture", "reliable_deterioration", "not_on_track"):
        assert (rules[rule]["planted"], rules[rule]["recall"], rules[rule]["precision"]) == (
            rules[rule]["flagged"], 1.0, 1.0), rule
    [phq9] = report["fits"]
    assert phq9["instrument"] == "phq9" and phq9["episodes"] == 120 and phq9["stored"]
    assert rules["expected_trajectory"]["kind"] == "not_on_track" and report["alert_latency_ms"]["count"] > 0
