"""The background task that sends the deliveries that are due: a signed webhook POST or an e-mail, one
try each, every try recorded with what it came to and when the next is due (domain.plan).

Each try runs as its own task (at most `concurrency` at once), so a receiver that hangs until the
timeout holds up no other. A delivery is claimed before it is tried (held for the timeout and a
margin), so two gateway replicas never try one delivery at once; a sender that dies mid-try lets the
claim run out and the delivery falls due again, with the same webhook-id. Deliveries are claimed
several at a time, and the tries made meanwhile are recorded together, one transaction for all (a
claim and a commit per delivery cost 2.5 times the throughput). The sender looks for due deliveries
every `notify_poll_seconds`, and at once when the consumer has queued some.

Nothing from a payload, a URL or an address goes into a log line or a metric: delivery, target and
tenant ids, the status code and the kind of failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rapport.services.gateway.notifications.domain import (
    Next,
    Tried,
    email_message,
    plan,
    retry_after,
    signed_headers,
)
from rapport.services.gateway.notifications.egress import AddressRefused, EgressPolicy, GuardedTransport
from rapport.services.gateway.notifications.repository import (
    Claimed,
    claim_due,
    record_attempt,
    seal_stored_secrets,
)
from rapport.services.gateway.notifications.sealing import UNREADABLE, sealing
from rapport.shared.messaging.consumer import utcnow
from rapport.shared.metrics import REGISTRY, ByTenant
from rapport.shared.service import VERSION
from rapport.shared.settings import Settings

log = logging.getLogger("rapport.gateway.notifications")

USER_AGENT = f"Rapport-Webhooks/{VERSION}"
# how long past the timeout a claimed delivery stays held before another sender may take it
CLAIM_MARGIN = timedelta(seconds=30)
# once tries are in flight, a claim waits for this many free slots (one claim, several deliveries);
# tries made meanwhile are recorded together, up to this many in one transaction
CLAIM_AT_ONCE = 8
RECORD_AT_ONCE = 100
# the longest the sender waits between looks at the due deliveries while the database is away
MAX_CLAIM_BACKOFF_SECONDS = 30.0

deliveries = ByTenant(Counter(
    "rapport_notification_deliveries_total",
    "Notification delivery attempts, by what they came to (delivered, retried, rejected, dead)",
    ["tenant", "channel", "outcome"], registry=REGISTRY,
))


@dataclass(frozen=True)
class SmtpRelay:
    hostname: str
    port: int
    use_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpRelay:
        """smtp://[user:password@]host[:port] (STARTTLS when offered; port 25 by default) or smtps://
        (TLS from the first byte; port 465)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("RAPPORT_SMTP_URL: expected smtp://host[:port] or smtps://host[:port]")
        tls = parts.scheme == "smtps"
        return cls(hostname=parts.hostname, port=parts.port or (465 if tls else 25), use_tls=tls,
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None)


@dataclass(frozen=True)
class Try:
    """One try made, waiting to be recorded."""

    delivery: Claimed
    tried: Tried
    then: Next
    started: datetime
    duration: timedelta


class NotificationSender:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, *,
                 clock: Callable[[], datetime] = utcnow, transport: httpx.AsyncBaseTransport | None = None,
                 concurrency: int = 32, jitter: Callable[[], float] = random.random) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        # every try goes through the SSRF guard (egress.py) unless a test hands its own transport
        self.egress = EgressPolicy.from_setting(settings.webhook_allow_hosts, settings.webhook_allow_http)
        self._transport = transport
        self._concurrency = concurrency
        self._jitter = jitter
        self._smtp = SmtpRelay.from_url(settings.smtp_url) if settings.smtp_url else None
        self._timeout = settings.webhook_timeout_seconds
        self._lease = timedelta(seconds=self._timeout) + CLAIM_MARGIN
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._tries: asyncio.Queue[Try] = asyncio.Queue()
        self._http: httpx.AsyncClient | None = None
        # told of each attempt once it is committed (the delivery and what it came to): for tests
        # and anything else that must know without polling the table
        self.recorded: list[Callable[[Claimed, Next], None]] = []

    @property
    def email_configured(self) -> bool:
        return self._smtp is not None

    def wake(self) -> None:
        """Deliveries were queued: look for due ones now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout), follow_redirects=False,
                                       transport=self._transport or GuardedTransport(self.egress),
                                       headers={"user-agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name="gateway-notification-sender")
        self._recorder = asyncio.create_task(self._record_tries(), name="gateway-notification-recorder")

    async def stop(self) -> None:
        """Tries in flight are cancelled (their claims run out and they are tried again later); the
        tries already made are recorded first."""
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._settings.graceful_timeout_seconds):
                    await self._tries.join()
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        if self._http is not None:
            await self._http.aclose()

    async def _seal_stored(self) -> None:
        """Once at start: the secrets stored before sealing are sealed; those the key cannot open said."""
        if not sealing():
            return
        try:
            async with self._sessions() as session, session.begin():
                sealed, unreadable = await seal_stored_secrets(session)
        except Exception:  # the database away: the next start tries again; new secrets are sealed anyway
            log.warning("could not seal the webhook secrets stored before sealing", exc_info=True)
            return
        if sealed:
            log.info("sealed %d webhook endpoints' secrets stored in the clear", sealed)
        if unreadable:
            log.error("%d webhook endpoints' secrets cannot be opened with this key (another key, or it was lost): "
                      "their tries fail as secret_unreadable until the key is restored or each secret is rotated",
                      len(unreadable), extra={"target_ids": unreadable})

    async def _run(self) -> None:
        await self._seal_stored()
        waited_out, failures = True, 0
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._in_flight)
            claimed: list[Claimed] = []
            # a slot freed by a finished try waits for a few more, so one claim serves several
            if free >= (1 if waited_out or not self._in_flight else min(CLAIM_AT_ONCE, self._concurrency)):
                try:
                    claimed, failures = await self._claim(free), 0
                except Exception:  # the database away: look again later, less often the longer it lasts
                    failures += 1
                    log.warning("could not read the due deliveries (%d in a row); trying again", failures,
                                exc_info=failures == 1)
                    await asyncio.sleep(min(MAX_CLAIM_BACKOFF_SECONDS,
                                            self._settings.notify_poll_seconds * 2 ** min(failures, 10)))
                    continue
            for delivery in claimed:
                task = asyncio.create_task(self._try(delivery), name=f"delivery-{delivery.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                waited_out = False
                continue  # maybe more are due: look again once slots are free
            try:
                await asyncio.wait_for(self._wake.wait(), self._settings.notify_poll_seconds)
                waited_out = False
            except TimeoutError:
                waited_out = True

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free

    async def _claim(self, limit: int) -> list[Claimed]:
        async with self._sessions() as session, session.begin():
            return await claim_due(session, self._clock(), limit, self._lease)

    async def _try(self, delivery: Claimed) -> None:
        started, began = self._clock(), time.perf_counter()
        sending = self._post if delivery.channel == "webhook" else self._mail
        tried = await sending(delivery, started)
        duration = timedelta(seconds=time.perf_counter() - began)
        then = plan(delivery.channel, delivery.attempt, tried, self._settings.notify_retry_seconds,
                    started + duration, jitter=self._jitter())
        self._tries.put_nowait(Try(delivery, tried, then, started, duration))

    async def _record_tries(self) -> None:
        """Every try made since the last commit, recorded in one transaction."""
        while True:
            batch = [await self._tries.get()]
            while not self._tries.empty() and len(batch) < RECORD_AT_ONCE:
                batch.append(self._tries.get_nowait())
            try:
                await self._record(batch)
            finally:
                for _ in batch:
                    self._tries.task_done()

    async def _record(self, batch: list[Try]) -> None:
        try:
            async with self._sessions() as session, session.begin():
                kept = [t for t in batch if await record_attempt(
                    session, t.delivery, t.tried, t.then, t.started, t.duration)]
        except Exception:  # not recorded: the claims run out and the deliveries are tried again
            log.warning("could not record %d delivery attempts", len(batch), exc_info=True,
                        extra={"delivery_ids": [t.delivery.id for t in batch]})
            return
        for gone in (t for t in batch if t not in kept):
            log.info("delivery gone or taken by another sender after its try",
                     extra={"delivery_id": gone.delivery.id, "target_id": gone.delivery.target_id})
        for t in kept:
            delivery, then = t.delivery, t.then
            deliveries.labels(delivery.tenant, delivery.channel, then.outcome).inc()
            for listener in self.recorded:
                listener(delivery, then)
            log.log(logging.INFO if then.outcome in ("delivered", "retried") else logging.WARNING,
                    "notification %s: %s, attempt %d (%s)", delivery.channel, then.outcome, delivery.attempt,
                    t.tried.error or t.tried.status_code,
                    extra={"delivery_id": delivery.id, "target_id": delivery.target_id, "tenant": delivery.tenant})

    async def _post(self, delivery: Claimed, started: datetime) -> Tried:
        if self._http is None or delivery.url is None or delivery.secret is None:
            return Tried(error="target_gone")
        if delivery.secret == UNREADABLE:  # sealed with another key: nothing it signed would verify
            return Tried(error="secret_unreadable")
        headers = signed_headers(delivery.secret, delivery.id, int(started.timestamp()), delivery.payload,
                                 previous=delivery.previous_secret)
        try:
            # httpx's timeout bounds each phase; this bounds the whole try (a receiver that trickles)
            async with asyncio.timeout(self._timeout), \
                    self._http.stream("POST", delivery.url, content=delivery.payload, headers=headers) as response:
                return Tried(status_code=response.status_code,
                             retry_after_seconds=retry_after(response.headers.get("retry-after"), self._clock()))
        except AddressRefused:  # not public, or not https (egress.py): refused, not tried again
            return Tried(error="address_refused")
        except (TimeoutError, httpx.TimeoutException):
            return Tried(error="timeout")
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            return Tried(error="invalid_url")
        except (httpx.HTTPError, OSError):
            return Tried(error="connection")

    async def _mail(self, delivery: Claimed, started: datetime) -> Tried:
        if self._smtp is None:
            return Tried(error="not_configured")
        if delivery.address is None:
            return Tried(error="target_gone")
        message = email_message(delivery.payload, to=delivery.address, sender=self._settings.smtp_from,
                                message_id=delivery.id, now=started)
        relay = self._smtp
        try:
            await aiosmtplib.send(message, hostname=relay.hostname, port=relay.port, use_tls=relay.use_tls,
                                  username=relay.username, password=relay.password, timeout=self._timeout)
        except aiosmtplib.SMTPTimeoutError:
            return Tried(error="timeout")
        except aiosmtplib.SMTPRecipientsRefused as refused:
            return Tried(status_code=refused.recipients[0].code if refused.recipients else 550)
        except aiosmtplib.SMTPResponseException as answered:
            return Tried(status_code=answered.code)
        except (aiosmtplib.SMTPException, OSError):
            return Tried(error="connection")
        return Tried(status_code=250)
