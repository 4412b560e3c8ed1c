"""Attendance through the gateway over real HTTP (uvicorn on loopback), with ingest running on the real
NATS JetStream, on SQLite and PostgreSQL (issue 15 item 1, issue 11's door): FHIR Appointment, Encounter
and EpisodeOfCare and the native attendance JSON answered 201 / 422 (FHIRPath expressions) / 202, a
Bundle of attendance answered entry by entry and a mixed one refused, resends answered once, and
every refusal made before anything is published. Synthetic clients only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from harness import running, until
from nats.aio.msg import Msg
from sqlalchemy import select
from test_gateway import client, codes, fhir_json, gateway_settings, serving, token
from test_gateway_messages import poll_until_answered

from rapport.services.ingest.models import StoredAttendance
from rapport.shared.db.engine import create_engine, session_factory

pytestmark = pytest.mark.nats

NOW = datetime.now(UTC).replace(microsecond=0)
CLIENT, EPISODE, CLINICIAN = "client-0601", "client-0601-ep1", "clinician-06"
NATIVE = {"Content-Type": "application/json"}


def appointment(appointment_id: str, status: str, *, version: int, days_ago: int = 2, **extra: Any) -> bytes:
    """An Appointment as EHRs publish one (the shape of the R4 example appointment 'example')."""
    start = NOW - timedelta(days=days_ago)
    return json.dumps({
        "resourceType": "Appointment", "id": appointment_id, "status": status,
        "meta": {"versionId": str(version),
                 "lastUpdated": (NOW - timedelta(days=days_ago, hours=-version)).isoformat()},
        "start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat(),
        "basedOn": [{"reference": f"EpisodeOfCare/{EPISODE}"}],
        "participant": [{"actor": {"reference": f"Patient/{CLIENT}"}, "status": "accepted"},
                        {"actor": {"reference": f"Practitioner/{CLINICIAN}"}, "status": "accepted"}],
        **extra,
    }).encode()


def encounter(encounter_id: str, *, appointment_id: str | None = None) -> bytes:
    start = NOW - timedelta(days=1)
    return json.dumps({
        "resourceType": "Encounter", "id": encounter_id, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "meta": {"versionId": "1", "lastUpdated": (start + timedelta(hours=1)).isoformat()},
        "subject": {"reference": f"Patient/{CLIENT}"},
        "participant": [{"individual": {"reference": f"Practitioner/{CLINICIAN}"}}],
        "episodeOfCare": [{"reference": f"EpisodeOfCare/{EPISODE}"}],
        "period": {"start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat()},
        **({"appointment": [{"reference": f"Appointment/{appointment_id}"}]} if appointment_id else {}),
    }).encode()


def native(appointment_id: str, status: str = "attended") -> bytes:
    start = NOW - timedelta(days=3)
    return json.dumps({"appointment_id": appointment_id, "client_id": CLIENT, "episode_id": EPISODE,
                       "clinician_id": CLINICIAN, "status": status, "start": start.isoformat(),
                       "recorded_at": (start + timedelta(hours=1)).isoformat()}).encode()


async def stored_appointments(database_url: str, tenant: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.execute(select(StoredAttendance.appointment_id, StoredAttendance.revision)
                                          .where(StoredAttendance.tenant == tenant))).all()
            return {appointment_id: revision for appointment_id, revision in rows}
    finally:
        await engine.dispose()


async def test_an_appointment_its_later_states_an_encounter_and_an_ending_are_created_over_fhir(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        booked = await http.post("/fhir/Appointment", content=appointment("appt-0601-01", "booked", version=1),
                                 headers=fhir_json())
        assert booked.status_code == 201, booked.text
        assert booked.headers["content-type"].startswith("application/fhir+json")
        assert booked.headers["location"] == "/fhir/Appointment/appt-0601-01/_history/1"
        assert booked.headers["etag"] == 'W/"1"'
        assert booked.json()["issue"][0]["diagnostics"] == \
            "accepted as the state of appointment appt-0601-01, revision 1 (new)"
        missed = await http.post("/fhir/Appointment", content=appointment("appt-0601-01", "noshow", version=2),
                                 headers={"Content-Type": "application/json"})
        assert (missed.status_code, missed.headers["location"]) == (201, "/fhir/Appointment/appt-0601-01/_history/2")
        assert "revision 2 (amended)" in missed.json()["issue"][0]["diagnostics"]
        late = await http.post("/fhir/Appointment", content=appointment("appt-0601-01", "booked", version=1,
                                                                        comment="a late copy"), headers=fhir_json())
        assert late.status_code == 201 and "(outdated)" in late.json()["issue"][0]["diagnostics"]

        # an Encounter naming its Appointment is that appointment's later state; one naming none its own
        attended = await http.post("/fhir/Encounter", content=encounter("enc-0601-02", appointment_id="appt-0601-02"),
                                   headers=fhir_json())
        assert (attended.status_code, attended.headers["location"]) == \
            (201, "/fhir/Appointment/appt-0601-02/_history/1"), attended.text
        walk_in = await http.post("/fhir/Encounter", content=encounter("enc-0601-03"), headers=fhir_json())
        assert (walk_in.status_code, walk_in.headers["location"]) == (201, "/fhir/Encounter/enc-0601-03/_history/1")

        ended = await http.post("/fhir/EpisodeOfCare", headers=fhir_json(), json={
            "resourceType": "EpisodeOfCare", "id": EPISODE, "status": "finished",
            "meta": {"lastUpdated": NOW.isoformat()}, "patient": {"reference": f"Patient/{CLIENT}"},
            "period": {"start": (NOW - timedelta(days=60)).isoformat(), "end": NOW.isoformat()}})
        assert (ended.status_code, ended.headers["location"]) == (201, f"/fhir/EpisodeOfCare/{EPISODE}/_history/1")
        assert ended.json()["issue"][0]["diagnostics"] == \
            f"accepted as the ending of episode {EPISODE}, revision 1 (new)"
    found = await stored_appointments(database_url, tenant)
    assert {k: v for k, v in found.items() if not k.startswith("ending:")} == {
        "appt-0601-01": 2, "appt-0601-02": 1, "Encounter/enc-0601-03": 1}
    assert len(found) == 4


async def test_a_bad_appointment_is_answered_422_with_every_problem_as_fhirpath(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        waitlisted = await http.post("/fhir/Appointment", headers=fhir_json(), json={
            "resourceType": "Appointment", "status": "waitlist",
            "participant": [{"actor": {"reference": f"Practitioner/{CLINICIAN}"}, "status": "accepted"}]})
        assert waitlisted.status_code == 422, waitlisted.text
        issues = waitlisted.json()["issue"]
        assert [(i["severity"], i["expression"]) for i in issues] == [
            ("error", ["Appointment.id"]), ("error", ["Appointment.status"]), ("error", ["Appointment.participant"])]
        assert codes(waitlisted.json()) == ["missing_field", "status_not_recorded", "missing_field"]
        cancelled = json.loads(appointment("appt-0601-09", "cancelled", version=3))
        cancelled["extension"] = [{"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment."
                                          "cancellationDate", "valueDateTime": "last tuesday"}]
        cancelled["cancelationReason"] = {"coding": [{"code": "not a code!"}]}
        refused = await http.post("/fhir/Appointment", json=cancelled, headers=fhir_json())
        assert refused.status_code == 422, refused.text
        assert [i["expression"] for i in refused.json()["issue"]] == [
            ["Appointment.extension[0].value.ofType(dateTime)"], ["Appointment.cancelationReason.coding[0].code"]]
        assert "last tuesday" not in refused.text and "not a code!" not in refused.text, "values are never repeated"
        ending = await http.post("/fhir/EpisodeOfCare", headers=fhir_json(), json={
            "resourceType": "EpisodeOfCare", "id": EPISODE, "status": "active"})
        assert ending.status_code == 422
        assert [i["expression"] for i in ending.json()["issue"]][:2] == [["EpisodeOfCare.status"],
                                                                         ["EpisodeOfCare.patient"]]
    assert await stored_appointments(database_url, tenant) == {}


async def test_native_attendance_and_endings_are_answered_in_the_native_format(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        attended = await http.post("/api/v1/attendance", content=native("appt-0601-11"), headers=NATIVE)
        assert attended.status_code == 201, attended.text
        assert attended.json() | {"message_id": "-"} == {
            "message_id": "-", "status": "accepted", "appointment_id": "appt-0601-11", "revision": 1,
            "disposition": "new", "warnings": []}
        ending = await http.post("/api/v1/attendance", headers=NATIVE, json={
            "client_id": CLIENT, "episode_id": EPISODE, "ending": "unplanned", "ended_at": NOW.isoformat(),
            "recorded_at": NOW.isoformat()})
        assert ending.status_code == 201, ending.text
        assert (ending.json()["status"], ending.json()["episode_id"]) == ("accepted", EPISODE)
        wrong = json.loads(native("appt-0601-12", status="maybe")) | {"room": "4b"}
        rejected = await http.post("/api/v1/attendance", json=wrong, headers=NATIVE)
        assert rejected.status_code == 422
        assert rejected.json()["status"] == "rejected" and rejected.json()["appointment_id"] == "appt-0601-12"
        assert {p["field"] for p in rejected.json()["problems"]} == {"room"}
        # the tenant is the token's: a body naming another is rejected on the token's tenant's subject
        elsewhere = await http.post("/api/v1/attendance", headers=NATIVE,
                                    json=json.loads(native("appt-0601-14")) | {"tenant": "another-clinic"})
        assert elsewhere.status_code == 422
        assert [p["code"] for p in elsewhere.json()["problems"]] == ["tenant_mismatch"]
        fhir = await http.post("/api/v1/attendance", content=appointment("appt-0601-13", "booked", version=1),
                               headers=NATIVE)
        assert fhir.status_code == 400 and fhir.json()["problems"][0]["field"] == "resourceType"
    assert "appt-0601-11" in await stored_appointments(database_url, tenant)
    assert await stored_appointments(database_url, "another-clinic") == {}


async def test_a_bundle_of_attendance_is_answered_entry_by_entry_and_a_mixed_one_is_refused(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file)
    appointments = [json.loads(appointment(f"appt-0601-2{n}", "fulfilled", version=1, days_ago=n)) for n in (1, 2)]
    bad = json.loads(appointment("appt-0601-29", "fulfilled", version=1))
    del bad["start"]
    patient = {"resourceType": "Patient", "id": CLIENT}
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        batch = await http.post("/fhir", headers=fhir_json(), json={
            "resourceType": "Bundle", "type": "batch",
            "entry": [{"resource": r} for r in (patient, *appointments, bad)]})
        assert batch.status_code == 200, batch.text
        answer = batch.json()
        assert answer["type"] == "batch-response"
        assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created", "201 Created",
                                                                      "422 Unprocessable Entity"]
        [issue] = answer["entry"][2]["response"]["outcome"]["issue"]
        assert issue["expression"] == ["Bundle.entry[3].resource.start"]

        questionnaire = json.loads((Path(__file__).parents[1] / "fixtures" / "fhir" / "qr-linkid-loinc.json")
                                   .read_text())
        mixed = await http.post("/fhir", headers=fhir_json(), json={
            "resourceType": "Bundle", "type": "batch",
            "entry": [{"resource": questionnaire}, {"resource": appointments[0]}]})
        assert mixed.status_code == 422, mixed.text
        assert codes(mixed.json()) == ["mixed_bundle"]
        assert "Bundle of their own" in mixed.json()["issue"][0]["diagnostics"]
        unnamed = await http.post("/fhir", headers=fhir_json(), json={
            "resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient},
                                                                     {"resource": {"resourceType": "Encounter"}}]})
        assert unnamed.status_code == 200, unnamed.text
        [refused] = unnamed.json()["entry"]
        assert refused["response"]["status"] == "422 Unprocessable Entity"
        assert refused["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.id"]
    assert await stored_appointments(database_url, tenant) == {"appt-0601-21": 1, "appt-0601-22": 1}


@pytest_asyncio.fixture
async def published(fresh_stream: str) -> AsyncIterator[list[str]]:
    """Subjects of every inbound message published while the test runs."""
    subjects: list[str] = []
    nc = await nats.connect(fresh_stream)

    async def seen(msg: Msg) -> None:
        subjects.append(msg.subject)

    await nc.subscribe("rapport.*.in.>", cb=seen)
    await nc.flush()
    yield subjects
    await nc.drain()


async def test_a_resend_is_answered_once_a_202_is_answered_on_resend_and_refusals_publish_nothing(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path, published: list[str]
) -> None:
    body = appointment("appt-0601-31", "fulfilled", version=1)
    key = fhir_json({"Idempotency-Key": "ehr-export-31"})
    async with serving(gateway_settings(database_url, key_file, gateway_answer_wait_seconds=0.5,
                                        gateway_max_body_bytes=4096), fresh_stream) as base:
        async with client(base, token(key_file, tenant, "clinician", clinician=CLINICIAN)) as clinician:
            assert (await clinician.post("/fhir/Appointment", content=body, headers=fhir_json())).status_code == 403
            assert (await clinician.post("/api/v1/attendance", content=native("a-1"), headers=NATIVE)).status_code \
                == 403
        for role in ("lead", "admin"):
            async with client(base, token(key_file, tenant, role)) as other:
                assert (await other.post("/fhir/Encounter", content=encounter("e-1"),
                                         headers=fhir_json())).status_code == 403, role
        async with client(base) as anonymous:
            refused = await anonymous.post("/fhir/EpisodeOfCare", content=b"{}", headers=fhir_json())
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        async with client(base, token(key_file, tenant)) as http:
            assert (await http.post("/fhir/Appointment", content=body,
                                    headers={"Content-Type": "text/plain"})).status_code == 415
            assert (await http.post("/api/v1/attendance", content=native("a-1"),
                                    headers={"Content-Type": "application/fhir+json"})).status_code == 415
            padded = json.loads(body) | {"comment": "x" * 4096}
            assert (await http.post("/fhir/Appointment", json=padded, headers=fhir_json())).status_code == 413
            assert (await http.post("/fhir/Appointment", content=b"{", headers=fhir_json())).status_code == 400
            wrong = await http.post("/fhir/Appointment", content=encounter("e-1"), headers=fhir_json())
            assert wrong.status_code == 400
            assert wrong.json()["issue"][0]["diagnostics"] == \
                "this endpoint takes a Appointment; POST a Encounter to /fhir/Encounter"
            assert published == []
            # ingest is not running yet: the broker has the message, no answer comes in time
            pending = await http.post("/fhir/Appointment", content=body, headers=key)
            assert pending.status_code == 202, pending.text
            assert pending.json()["issue"][0]["severity"] == "information"
            message_id = pending.headers["rapport-message-id"]
            poll = pending.headers["location"]
            assert poll == f"/fhir/_messages/{message_id}"
            assert (await http.get(poll)).status_code == 202, "pending while ingest has not answered"
            await asyncio.sleep(0.1)
            assert published == [f"rapport.{tenant}.in.attendance"]
    settings = gateway_settings(database_url, key_file)
    async with running(["ingest"], settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as http:
        first = await http.post("/fhir/Appointment", content=body, headers=key)
        assert (first.status_code, first.headers["rapport-message-id"]) == (201, message_id), first.text
        polled = await poll_until_answered(http, poll)  # the answer is stored by the projection, a moment on
        assert (polled.status_code, polled.headers["rapport-answer-status"]) == (200, "201")
        assert (polled.json(), polled.headers["etag"]) == (first.json(), 'W/"1"')
        again = await http.post("/fhir/Appointment", content=body, headers=key)
        assert (again.status_code, again.json(), again.headers["location"]) == (
            201, first.json(), "/fhir/Appointment/appt-0601-31/_history/1")
        # the same key for a submission is another message: it never gets the appointment's answer
        submission = await http.post("/fhir/QuestionnaireResponse", headers=key, content=(
            Path(__file__).parents[1] / "fixtures" / "fhir" / "qr-linkid-loinc.json").read_bytes())
        assert submission.headers["rapport-message-id"] != message_id
    assert await stored_appointments(database_url, tenant) == {"appt-0601-31": 1}
    # the 202's message, and the first resend when it came before ingest's answer was stored (the
    # broker's duplicate, answered once); the second resend was answered from the stored answers
    assert published.count(f"rapport.{tenant}.in.attendance") in (1, 2)

# the clinic's story over HTTP, and the attendance in the record API

SERVICES = ["ingest", "scoring", "alerts"]


class Clinic:
    """A clinic's system sending one client's sessions (every four days, the last four days ago) and their
    SRS through the gateway, as an integration engine does: all over HTTP, each answered 201."""

    def __init__(self, http: Any, client: str, clinician: str) -> None:
        self.http, self.client, self.clinician = http, client, clinician
        self.episode = f"{client}-ep1"
        self.base = NOW - timedelta(days=20)

    def start(self, session: int) -> datetime:
        return self.base + timedelta(days=4 * (session - 1))

    async def srs(self, session: int, total: float) -> None:
        quarter = round(total / 4, 1)
        answered = await self.http.post("/api/v1/submissions", headers=NATIVE, json={
            "submission_id": f"{self.client}-srs-{session}", "instrument": "srs", "client_id": self.client,
            "episode_id": self.episode, "clinician_id": self.clinician, "session": session,
            "administered_at": (self.start(session) + timedelta(minutes=50)).isoformat(),
            "responses": {"1": quarter, "2": quarter, "3": quarter, "4": round(total - 3 * quarter, 1)}})
        assert answered.status_code == 201, answered.text

    async def session(self, session: int, status: str) -> None:
        """A FHIR Appointment in its final state (fulfilled or noshow), as the EHR publishes it."""
        start = self.start(session)
        answered = await self.http.post("/fhir/Appointment", headers=fhir_json(), json={
            "resourceType": "Appointment", "id": f"{self.client}-appt-{session}", "status": status,
            "meta": {"versionId": "2", "lastUpdated": (start + timedelta(hours=1)).isoformat()},
            "start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat(),
            "basedOn": [{"reference": f"EpisodeOfCare/{self.episode}"}],
            "participant": [{"actor": {"reference": f"Patient/{self.client}"}, "status": "accepted"},
                            {"actor": {"reference": f"Practitioner/{self.clinician}"}, "status": "accepted"}]})
        assert answered.status_code == 201, answered.text


async def test_a_client_whose_srs_falls_and_who_then_misses_two_sessions_over_http_has_one_escalated_alert(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file, licensed_instruments=f"{tenant}:srs")
    clinician = token(key_file, tenant, "clinician", clinician="clinician-07")
    async with running(SERVICES, settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as ehr, client(base, clinician) as therapist:
        aroha = Clinic(ehr, "client-aroha", "clinician-07")
        for session, total in ((1, 38), (2, 38.5), (3, 31)):
            await aroha.session(session, "fulfilled")
            await aroha.srs(session, total)

        async def ruptures() -> list[dict[str, Any]]:
            listed = (await therapist.get("/api/v1/alerts", params={"kind": "alliance_rupture"})).json()["alerts"]
            return list(listed)
        [raised] = await until(ruptures)
        alert_id = raised["alert_id"]
        await aroha.session(4, "noshow")
        await aroha.session(5, "noshow")

        async def escalated_twice() -> dict[str, Any] | None:
            alert = (await therapist.get(f"/api/v1/alerts/{alert_id}")).json()
            missed = alert["evidence"][-1].get("values", {}).get("missed")
            return alert if alert["escalated"] and missed == ["client-aroha-appt-4", "client-aroha-appt-5"] else None
        alert = await until(escalated_twice)
        assert alert, "the rupture was escalated by the missed sessions"
        assert (alert["kind"], alert["severity"], alert["status"]) == ("alliance_rupture", "high", "open")
        assert alert["evidence"][-1]["rule_id"] == "disengagement"
        assert [t["transition"] for t in alert["transitions"]][:2] == ["raised", "escalated"]
        every = (await therapist.get("/api/v1/alerts")).json()
        assert [a["alert_id"] for a in every["alerts"]] == [alert_id], "one alert for one situation"

        async def missed_two() -> list[dict[str, Any]]:
            episodes = (await therapist.get("/api/v1/clients/client-aroha/episodes")).json()
            shown = episodes[0].get("attendance") if isinstance(episodes, list) and episodes else None
            return episodes if shown and shown["missed_in_a_row"] == 2 else []
        found = await until(missed_two)
        assert found, "the summary after both missed sessions"
        [episode] = found
        attendance = episode["attendance"]
        assert (attendance["attended"], attendance["no_shows"], attendance["cancelled"],
                attendance["late_cancellations"], attendance["ending"]) == (3, 2, 0, 0, "open")
        assert [m["appointment_id"] for m in attendance["missed_since_attended"]] == \
            ["client-aroha-appt-4", "client-aroha-appt-5"]
        assert datetime.fromisoformat(attendance["last_attended_at"]) == aroha.start(3)
        assert 11.9 < attendance["days_since_attended"] < 12.1, "twelve days since session 3, counted now"
        record = (await therapist.get(f"/api/v1/clients/client-aroha/episodes/{aroha.episode}/scores")).json()
        assert record["attendance"] == attendance
        assert [s["total"] for s in record["scores"]] == [38.0, 38.5, 31.0]
        assert [a["alert_id"] for a in record["alerts"]] == [alert_id]


async def test_the_attendance_on_a_record_is_seen_by_its_clinician_and_lead_and_by_no_one_else(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    settings = gateway_settings(database_url, key_file, licensed_instruments=f"{tenant}:srs")
    tokens = {
        "own": token(key_file, tenant, "clinician", clinician="clinician-07"),
        "lead": token(key_file, tenant, "lead"),
        "other clinician": token(key_file, tenant, "clinician", clinician="clinician-99"),
        "other tenant's lead": token(key_file, f"{tenant}-x", "lead"),
        "other tenant's clinician": token(key_file, f"{tenant}-x", "clinician", clinician="clinician-07"),
        "integration": token(key_file, tenant),
        "admin": token(key_file, tenant, "admin"),
    }
    async with running(SERVICES, settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, tokens["integration"]) as ehr, client(base, tokens["own"]) as own:
        cara = Clinic(ehr, "client-cara", "clinician-07")
        await cara.session(1, "fulfilled")
        await cara.srs(1, 38)
        await cara.session(2, "noshow")
        paths = ["/api/v1/clients/client-cara/episodes",
                 f"/api/v1/clients/client-cara/episodes/{cara.episode}/scores"]

        async def counted() -> list[dict[str, Any]]:
            episodes = (await own.get(paths[0])).json()
            shown = episodes[0].get("attendance") if isinstance(episodes, list) and episodes else None
            return episodes if shown and shown["no_shows"] == 1 and shown["attended"] == 1 else []
        [episode] = await until(counted)
        for who in ("lead",):
            async with client(base, tokens[who]) as http:
                assert [(await http.get(p)).status_code for p in paths] == [200, 200], who
                assert (await http.get(paths[0])).json()[0]["attendance"] == episode["attendance"], who
        for who in ("other clinician", "other tenant's lead", "other tenant's clinician"):
            async with client(base, tokens[who]) as http:
                answers = [await http.get(p) for p in paths]
                assert [a.status_code for a in answers] == [404, 404], who
                assert all("attendance" not in a.text and "client-cara-appt" not in a.text for a in answers), who
        for who, status in (("integration", 403), ("admin", 403), (None, 401)):
            async with client(base, tokens[who] if who else None) as http:
                assert [(await http.get(p)).status_code for p in paths] == [status, status], who


async def test_an_episode_with_appointments_and_no_score_yet_is_listed_for_the_clinician_they_name(
    database_url: str, fresh_stream: str, tenant: str, key_file: Path
) -> None:
    """Dara's first two sessions are booked and attended before any measure is sent: her clinician
    (named on the appointments) finds the episode with its attendance and no score; another clinician
    does not; the lead does."""
    settings = gateway_settings(database_url, key_file, licensed_instruments=f"{tenant}:srs")
    async with running(SERVICES, settings, fresh_stream), serving(settings, fresh_stream) as base, \
            client(base, token(key_file, tenant)) as ehr, \
            client(base, token(key_file, tenant, "clinician", clinician="clinician-07")) as own:
        dara = Clinic(ehr, "client-dara", "clinician-07")
        await dara.session(1, "fulfilled")
        await dara.session(2, "fulfilled")
        listed = "/api/v1/clients/client-dara/episodes"

        async def both_attended() -> list[dict[str, Any]]:
            answer = await own.get(listed)
            episodes = answer.json() if answer.status_code == 200 else []
            return episodes if episodes and (episodes[0].get("attendance") or {}).get("attended") == 2 else []
        [episode] = await until(both_attended)
        assert (episode["episode_id"], episode["clinician_id"], episode["scores"]) == (dara.episode, "clinician-07", 0)
        assert episode["first_administered_at"] is None and episode["instruments"] == []
        record = await own.get(f"{listed}/{dara.episode}/scores")
        assert record.status_code == 200 and record.json()["scores"] == []
        assert record.json()["attendance"]["attended"] == 2
        page = await own.get("/clients/client-dara")
        assert page.status_code == 200 and "No score yet" in page.text
        async with client(base, token(key_file, tenant, "clinician", clinician="clinician-99")) as other:
            assert (await other.get(listed)).status_code == 404
            assert (await other.get(f"{listed}/{dara.episode}/scores")).status_code == 404
        async with client(base, token(key_file, tenant, "lead")) as lead:
            assert [e["episode_id"] for e in (await lead.get(listed)).json()] == [dara.episode]


async def test_the_newest_summary_of_an_episode_stands_whatever_order_the_events_come_in(
    sessions: Any,
) -> None:
    from rapport.services.gateway.records import AttendanceShown, attendance_table, keep_attendance
    from rapport.shared.contracts.attendance import AttendanceRecorded, AttendanceSummary

    def recorded(appointment: str, attended: int, *, hours: int, episode: str | None = EPISODE,
                 summary: bool = True, clinician: str | None = None) -> AttendanceRecorded:
        as_of = NOW + timedelta(hours=hours)
        return AttendanceRecorded(
            tenant="clinic-a", appointment_id=appointment, revision=1, client_id=CLIENT, episode_id=episode,
            clinician_id=clinician,
            status="attended", summary=AttendanceSummary(as_of=as_of, attended=attended,
                                                         last_attended_at=NOW - timedelta(days=3),
                                                         days_since_attended=3.0) if summary else None)

    async with sessions() as session, session.begin():
        await keep_attendance(session, [recorded("a-2", 2, hours=2, clinician=CLINICIAN),
                                        recorded("a-1", 1, hours=1)])
    async with sessions() as session, session.begin():  # late, and ones that change nothing
        await keep_attendance(session, [recorded("a-1", 1, hours=1), recorded("a-3", 9, hours=3, episode=None),
                                        recorded("a-4", 9, hours=4, summary=False)])
    async with sessions() as session, session.begin():  # newer, naming no clinician (as an ending): keeps it
        await keep_attendance(session, [recorded("a-5", 2, hours=5)])
    async with sessions() as session:
        [row] = (await session.execute(select(attendance_table))).all()
    assert (row.episode_id, row.summary["attended"], row.clinician_id) == (EPISODE, 2, CLINICIAN)
    assert row.as_of == NOW + timedelta(hours=5)
    shown = AttendanceShown.of(AttendanceSummary.model_validate(row.summary), NOW + timedelta(days=1))
    assert shown.days_since_attended == 4.0, "counted to now while the episode is open"
    ended = AttendanceSummary.model_validate(row.summary | {"ending": "planned", "ending_recorded": True})
    assert AttendanceShown.of(ended, NOW + timedelta(days=30)).days_since_attended == 3.0, "as of the summary"
