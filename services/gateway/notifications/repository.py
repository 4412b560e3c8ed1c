"""Notification delivery on disk: the targets (webhook endpoints, e-mail subscriptions), the outbox of
deliveries and their attempts. Every read of a target is scoped (`Scope`): a row outside the
caller's scope is not found, whether or not it exists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import String, case, delete, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from rapport.services.gateway.notifications.domain import (
    Channel,
    NewDelivery,
    Next,
    Scope,
    Target,
    Tried,
    still_signing,
)
from rapport.services.gateway.notifications.models import (
    Delivery,
    DeliveryAttempt,
    EmailSubscription,
    WebhookEndpoint,
)
from rapport.services.gateway.notifications.sealing import is_sealed, opens
from rapport.shared.db.upsert import insert_ignoring_conflicts

TargetRow = WebhookEndpoint | EmailSubscription
MODELS: dict[Channel, type[WebhookEndpoint] | type[EmailSubscription]] = {
    "webhook": WebhookEndpoint, "email": EmailSubscription}


# targets


async def add_target(session: AsyncSession, row: TargetRow) -> None:
    session.add(row)
    await session.flush()


async def targets_in_scope(session: AsyncSession, channel: Channel, scope: Scope) -> list[TargetRow]:
    model = MODELS[channel]
    query = select(model).where(model.tenant == scope.tenant)
    if scope.clinician is not None:
        query = query.where(model.clinician_id == scope.clinician)
    rows = (await session.execute(query.order_by(model.created_at, model.id))).scalars()
    return cast(list[TargetRow], list(rows))


async def target_in_scope(session: AsyncSession, channel: Channel, scope: Scope, target_id: str) -> TargetRow | None:
    row = cast(TargetRow | None, await session.get(MODELS[channel], target_id))
    return row if row is not None and scope.sees(row.tenant, row.clinician_id) else None


async def remove_target(session: AsyncSession, channel: Channel, scope: Scope, target_id: str) -> bool:
    """The target, its deliveries (none is sent after this commits) and their attempts."""
    if await target_in_scope(session, channel, scope, target_id) is None:
        return False
    await session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.target_id == target_id))
    await session.execute(delete(Delivery).where(Delivery.target_id == target_id))
    await session.execute(delete(MODELS[channel]).where(MODELS[channel].id == target_id))
    return True


async def rotate_secret(session: AsyncSession, scope: Scope, target_id: str, secret: str, now: datetime,
                        grace: timedelta) -> WebhookEndpoint | None:
    """The endpoint signs with `secret` from now on, and with the secret it replaces until `now +
    grace` (a second rotation within that time drops the oldest: two secrets at most). None when the
    endpoint is not in the caller's scope."""
    row = await session.get(WebhookEndpoint, target_id, with_for_update=True)
    if row is None or not scope.sees(row.tenant, row.clinician_id):
        return None
    # a secret the key cannot open (sealing.UNREADABLE) signs nothing: it is not kept for the changeover
    row.previous_secret, row.previous_secret_until = row.secret or None, now + grace
    row.secret = secret
    await session.flush()
    return row


async def seal_stored_secrets(session: AsyncSession) -> tuple[int, list[str]]:
    """Secrets stored in the clear (before sealing) sealed now: how many endpoints, and the ids of
    those whose sealed secret the process's key cannot open (another key, or the key was lost)."""
    raw = String(100)  # the column's stored text, past SealedSecret
    rows = (await session.execute(select(WebhookEndpoint.id, sql_cast(WebhookEndpoint.secret, raw),
                                         sql_cast(WebhookEndpoint.previous_secret, raw)))).all()
    sealed, unreadable = 0, []
    for endpoint_id, secret, previous in rows:
        clear = {name: value for name, value in (("secret", secret), ("previous_secret", previous))
                 if value and not is_sealed(value)}
        if clear:
            await session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(**clear))
            sealed += 1
        if is_sealed(secret) and not opens(secret):
            unreadable.append(endpoint_id)
    return sealed, unreadable


async def targets_of(session: AsyncSession, tenants: Iterable[str], channels: Iterable[Channel]) -> list[Target]:
    """Every target of these tenants, on the channels that can send (one read per table)."""
    wanted = sorted(set(tenants))
    found: list[Target] = []
    for channel in channels:
        model = MODELS[channel]
        rows = await session.execute(select(model.id, model.tenant, model.clinician_id).where(model.tenant.in_(wanted)))
        found += [Target(id=i, tenant=t, channel=channel, clinician_id=c) for i, t, c in rows]
    return found


# the outbox of deliveries


async def queue(session: AsyncSession, deliveries: Sequence[NewDelivery], now: datetime) -> None:
    """A delivery queued already (the same event and target: a redelivery) is left as it is."""
    if not deliveries:
        return
    rows = [{"id": d.id, "tenant": d.tenant, "channel": d.channel, "target_id": d.target_id, "event_id": d.event_id,
             "alert_id": d.alert_id, "payload": d.payload, "status": "pending", "attempts": 0, "created_at": now,
             "next_attempt_at": now, "finished_at": None} for d in deliveries]
    statement = insert_ignoring_conflicts(session, Delivery.__table__, ["id"])  # type: ignore[arg-type]
    await session.execute(statement, rows)


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender holds for one try: what to send, and where."""

    id: str
    tenant: str
    channel: Channel
    target_id: str
    attempt: int
    payload: bytes
    url: str | None = None
    secret: str | None = None
    previous_secret: str | None = None  # during a changeover after a rotation: signs too
    address: str | None = None


async def claim_due(session: AsyncSession, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
    """Up to `limit` deliveries due by `now`, each held until `now + lease` (a sender that dies
    mid-try lets it fall due again then; the webhook-id stays the same). Rows another replica is
    claiming are skipped (PostgreSQL's SKIP LOCKED), and a claim only holds where the attempt count
    is still the one read."""
    due = (await session.execute(
        select(Delivery.id, Delivery.attempts).where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at).limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL: another sender's rows are passed over (SQLite: one writer)
    )).all()
    if not due:
        return []
    # one statement for the batch; a row whose attempt count moved since the read (another sender
    # took it) is not updated, and so not held
    attempts = case({d: a for d, a in due}, value=Delivery.id)
    await session.execute(
        update(Delivery).where(Delivery.id.in_([d for d, _ in due]), Delivery.status == "pending",
                               Delivery.attempts == attempts)
        .values(attempts=Delivery.attempts + 1, next_attempt_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    expected = {d: a + 1 for d, a in due}
    rows = [r for r in (await session.execute(select(Delivery).where(Delivery.id.in_(list(expected))))).scalars()
            if r.attempts == expected[r.id] and r.next_attempt_at == now + lease]
    held = [r.id for r in rows]
    if not held:
        return []
    endpoints = {e.id: e for e in (await session.execute(
        select(WebhookEndpoint).where(WebhookEndpoint.id.in_({r.target_id for r in rows if r.channel == "webhook"}))
    )).scalars()}
    addresses = {s.id: s for s in (await session.execute(
        select(EmailSubscription).where(EmailSubscription.id.in_({r.target_id for r in rows if r.channel == "email"}))
    )).scalars()}
    claimed = []
    for row in rows:
        channel: Channel = "email" if row.channel == "email" else "webhook"
        endpoint, subscription = endpoints.get(row.target_id), addresses.get(row.target_id)
        claimed.append(Claimed(
            id=row.id, tenant=row.tenant, channel=channel, target_id=row.target_id, attempt=row.attempts,
            payload=row.payload, url=endpoint.url if endpoint else None, secret=endpoint.secret if endpoint else None,
            previous_secret=still_signing(endpoint.previous_secret or None, endpoint.previous_secret_until, now)
            if endpoint else None,
            address=subscription.address if subscription else None))
    return claimed


async def record_attempt(session: AsyncSession, claimed: Claimed, tried: Tried, then: Next, started: datetime,
                         duration: timedelta) -> bool:
    """The try and what follows from it; False when the delivery is no longer this sender's (its
    target was deleted meanwhile, or its lease ran out and another sender took it)."""
    result = await session.execute(
        update(Delivery).where(Delivery.id == claimed.id, Delivery.attempts == claimed.attempt,
                               Delivery.status == "pending")
        .values(status=then.status, next_attempt_at=then.next_attempt_at,
                finished_at=None if then.status == "pending" else started + duration)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(DeliveryAttempt(
        delivery_id=claimed.id, attempt=claimed.attempt, tenant=claimed.tenant, target_id=claimed.target_id,
        attempted_at=started, duration_ms=int(duration.total_seconds() * 1000), status_code=tried.status_code,
        error=tried.error, outcome=then.outcome, next_attempt_at=then.next_attempt_at))
    await session.flush()
    return True


async def try_again(session: AsyncSession, target_id: str, delivery_id: str, now: datetime) -> str | None:
    """A delivery that is done (delivered, rejected, dead) made due now for one more try, with the
    same webhook-id: its status before, or None when the target has no such delivery. A pending one
    is left as it is (its next try is coming)."""
    row = await session.get(Delivery, delivery_id, with_for_update=True)
    if row is None or row.target_id != target_id:
        return None
    before = row.status
    if before != "pending":
        await session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.status == before)
                              .values(status="pending", next_attempt_at=now, finished_at=None))
    return before


@dataclass(frozen=True)
class AttemptSeen:
    webhook_id: str
    event_id: str
    alert_id: str
    attempt: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str
    next_attempt_at: datetime | None
    delivery_status: str


async def attempts_for(session: AsyncSession, target_id: str, limit: int) -> list[AttemptSeen]:
    """A target's attempts, newest first (call only for a target found in the caller's scope)."""
    rows = await session.execute(
        select(DeliveryAttempt, Delivery.event_id, Delivery.alert_id, Delivery.status)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(DeliveryAttempt.target_id == target_id)
        .order_by(DeliveryAttempt.attempted_at.desc(), DeliveryAttempt.attempt.desc()).limit(limit)
    )
    return [AttemptSeen(webhook_id=a.delivery_id, event_id=event_id, alert_id=alert_id, attempt=a.attempt,
                        attempted_at=a.attempted_at, duration_ms=a.duration_ms, status_code=a.status_code,
                        error=a.error, outcome=a.outcome, next_attempt_at=a.next_attempt_at, delivery_status=status)
            for a, event_id, alert_id, status in rows]


async def forget_finished(session: AsyncSession, before: datetime) -> None:
    """Deliveries done (delivered, rejected, dead) before `before`, and their attempts. Kept as long as
    the inboxes remember events, so a replayed event is still recognised as sent."""
    finished = (Delivery.status != "pending") & (Delivery.finished_at < before)
    await session.execute(delete(DeliveryAttempt).where(
        DeliveryAttempt.delivery_id.in_(select(Delivery.id).where(finished))))
    await session.execute(delete(Delivery).where(finished))
