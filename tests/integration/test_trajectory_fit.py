"""Expected trajectories fitted from the clinic's own history, used by the running alerts service:
real NATS JetStream, on SQLite and on PostgreSQL, `rapport trajectories fit` as clinic IT runs it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from harness import running, settings_for, watching
from typer.testing import CliRunner

from rapport.cli import app
from rapport.journeys import Journey, Journeys
from rapport.services.alerts.rules.trajectory import MixedModelFit
from rapport.services.alerts.trajectory_model import held_out
from rapport.trajectories import stored_fits

pytestmark = pytest.mark.nats
SERVICES = ["ingest", "scoring", "alerts"]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def phq9(client: str, session: int, total: int) -> bytes:
    """A PHQ-9 with the given total and item 9 at 0 (no risk finding to get in the way)."""
    items = [min(3, max(0, total - 3 * n)) for n in range(8)] + [0]
    assert sum(items) == total
    return json.dumps({
        "submission_id": f"{client}-s{session}", "instrument": "phq9", "client_id": client,
        "episode_id": f"{client}-ep1", "clinician_id": "clinician-01",
        "administered_at": (T0 + timedelta(days=7 * (session - 1))).isoformat(),
        "responses": {str(n + 1): v for n, v in enumerate(items)},
    }).encode()


async def all_answered(journeys: Journeys, bodies: list[bytes]) -> list[Journey]:
    sent = [await journeys.submit(body) for body in bodies]
    await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in sent)), 60)
    return sent


async def test_a_client_slower_than_the_clinics_own_clients_with_the_same_intake_is_not_on_track(
    database_url: str, fresh_stream: str, tenant: str
) -> None:
    """Twenty earlier clients with a moderate intake (11-13) fell about two points by session 2, four by
    session 3 and five by session 4. After `rapport trajectories fit` (the mixed model, intake continuous), a
    new client with an intake of 12 still at 14 at session 3 gets a not_on_track alert from the
    expected-trajectory rule, three sessions before the checkpoint rule could."""
    history = [phq9(f"client-{i:04d}", s, total) for i in range(20)
               for s, total in ((1, 11 + i % 3), (2, 11 + i % 3 - 3 + i % 3 + i % 2),
                                (3, 11 + i % 3 - 5 + i % 3 + (i // 3) % 2), (4, 11 + i % 3 - 6 + i % 4))]
    settings = settings_for(database_url, trajectory_refresh_seconds=0)
    async with running(SERVICES, settings, fresh_stream), watching(fresh_stream, tenant) as watch:
        await all_answered(watch, history)
        assert not [e for e in watch.alert_events if e["data"]["alert"]["kind"] == "not_on_track"]

        fitted = await asyncio.to_thread(CliRunner().invoke, app, ["trajectories", "fit", "--tenant", tenant],
                                         env={"RAPPORT_DATABASE_URL": database_url})
        assert fitted.exit_code == 0, fitted.output
        assert f"{tenant[:16]:<16} phq9" in fitted.output and "mixed model on 60 scores" in fitted.output
        [fit] = await stored_fits(database_url, [tenant])
        assert isinstance(fit, MixedModelFit)
        assert (fit.episodes, fit.observations, fit.first_session, fit.last_session) == (20, 60, 2, 4)
        shown = await asyncio.to_thread(CliRunner().invoke, app, ["trajectories", "show", "--tenant", tenant],
                                        env={"RAPPORT_DATABASE_URL": database_url})
        assert shown.exit_code == 0 and "G = [[" in shown.output and "residual variance" in shown.output
        calibrated = await asyncio.to_thread(CliRunner().invoke, app, ["trajectories", "fit", "--tenant", tenant,
                                                                       "--calibration"],
                                             env={"RAPPORT_DATABASE_URL": database_url})
        held = sum(held_out(f"client-{i:04d}/client-{i:04d}-ep1") for i in range(20))
        assert calibrated.exit_code == 0, calibrated.output
        assert f"fitted on {20 - held} episodes, judged on {held} held out" in calibrated.output
        assert "no mixed-model fit on the fitting part" in calibrated.output  # fewer than 20 left to fit on

        [_, within, off] = await all_answered(watch, [phq9("client-0100", s, t) for s, t in ((1, 12), (2, 11),
                                                                                              (3, 14))])
    assert within.alerts == []
    [raised] = [e["data"] for e in off.alerts]
    assert (raised["transition"], raised["alert"]["kind"], raised["alert"]["severity"]) == (
        "raised", "not_on_track", "high")
    found = raised["alert"]["evidence"][0]
    assert found["rule_id"] == "expected_trajectory" and found["values"]["intake_band"] == "moderate"
    assert found["values"]["boundary"] < 14 and found["values"]["episodes_in_cell"] == 20
    assert found["values"]["method"] == fit.method and found["values"]["curve_session"] == 3
    assert found["summary"].startswith("Off the expected trajectory on PHQ-9 at session 3: 14")
