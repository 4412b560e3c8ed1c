"""The one broker factory and the one stream. Everything NATS-specific stays in shared/messaging."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import ssl
from collections.abc import Callable
from time import monotonic
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import faststream.nats.subscriber.usecases.stream_pull_subscriber as _pull_subscriber
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.security import NatsCredentials, NatsNKey, NatsSecurity, NatsUserPassword, parse_security
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js.api import AckPolicy as ConsumerAckPolicy
from nats.js.errors import ServiceUnavailableError

from rapport.shared.settings import Settings

# FastStream 0.7.8's batch pull loop catches nats.errors.TimeoutError, but nats-py 2.16's
# multi-message fetch raises the plain asyncio.TimeoutError (a base class of it), which escapes the
# loop: the messages already fetched for the batch are dropped until ack_wait redelivers them and
# the task is restarted by FastStream's supervisor. Catching the base class there is the fix.
_pull_subscriber.TimeoutError = builtins.TimeoutError  # type: ignore[attr-defined,assignment]

# How long an idle consumer's pull request waits at the broker for a first message. FastStream's
# batch loop re-polls every `timeout` (our batch window, 5 ms) even when nothing comes: two pull
# requests and two status replies per window per subscriber, measured at about 13% of a core per
# idle service and 23% for nats-server. Waiting for the first message in one long pull, then giving
# the batch its window to fill, keeps the latency and drops the spin.
FIRST_MESSAGE_WAIT_SECONDS = 1.0


async def _consume_batches(self: _pull_subscriber.BatchPullStreamSubscriber) -> None:
    """FastStream's batch pull loop, but blocking for the first message instead of spinning."""
    assert self.subscription, "create_subscription first"
    batch_size, window = self.pull_sub.batch_size, self.pull_sub.timeout or 0.0
    while self.running:
        try:
            messages: list[Msg] = await self.subscription.fetch(batch=1, timeout=FIRST_MESSAGE_WAIT_SECONDS)
        except (builtins.TimeoutError, ConnectionClosedError, ServiceUnavailableError) as error:
            _unless_cancelled()
            if not isinstance(error, builtins.TimeoutError):
                await asyncio.sleep(0.1)  # the client is reconnecting: do not spin
            continue
        deadline = monotonic() + window
        while len(messages) < batch_size and self.running and (remaining := deadline - monotonic()) > 0:
            try:
                messages += await self.subscription.fetch(batch=batch_size - len(messages), timeout=remaining)
            except builtins.TimeoutError:
                _unless_cancelled()
                break
            except (ConnectionClosedError, ServiceUnavailableError):
                _unless_cancelled()
                messages.clear()  # unacked: the broker redelivers them
                break
        if messages and self.running:
            await self.consume(messages)


def _unless_cancelled() -> None:
    """A fetch cancelled from outside can surface as a timeout (nats-py waits with wait_for inside):
    the loop must end then, not fetch again, or the task outlives every attempt to stop it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_pull_subscriber.BatchPullStreamSubscriber._consume_pull = _consume_batches  # type: ignore[method-assign]

def bound_stream(name: str) -> JStream:
    """A stream a subscriber binds to. Declared by ensure_streams (streams.py), never by FastStream,
    which would merge subjects into an existing stream and overwrite what an operator set."""
    return JStream(name, declare=False)


def broker_servers(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222,nats://c:4222` (a cluster) as the list of servers the client tries."""
    return [server.strip() for server in url.split(",") if server.strip()]


def make_broker(settings: Settings, url: str, *, service: str) -> NatsBroker:
    """Per-message log lines from FastStream go to DEBUG: at the default level they would halve throughput."""
    check = SignInCheck(settings, url)
    broker = NatsBroker(
        broker_servers(url),
        name=f"rapport-{service}",
        logger=logging.getLogger(f"rapport.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=settings.graceful_timeout_seconds,
        # Never FastStream's NATS default (terminate on error): subscribers ack by hand, see consumer.py.
        ack_policy=AckPolicy.MANUAL,
        max_reconnect_attempts=-1,
        security=broker_security(settings),
        error_cb=check.on_error,
    )
    check.connected = lambda: broker._connection is not None
    return broker


# ---- signing in and TLS: one definition for the services' brokers and every other client -------------


class BrokerRefused(RuntimeError):
    """The broker refused this connection's sign-in or TLS, or TLS was asked for and the broker has
    none. The message names the setting to fix, never its value."""


def broker_security(settings: Settings) -> NatsSecurity | None:
    """The sign-in (RAPPORT_BROKER_USER/PASSWORD, _CREDS or _NKEY_SEED_FILE) and TLS (RAPPORT_BROKER_TLS_*)."""
    context = tls_context(settings)
    if settings.broker_creds:
        return NatsCredentials.from_file(_readable(settings.broker_creds, "RAPPORT_BROKER_CREDS"),
                                         ssl_context=context)
    if settings.broker_nkey_seed_file:
        return NatsNKey.from_file(_readable(settings.broker_nkey_seed_file, "RAPPORT_BROKER_NKEY_SEED_FILE"),
                                  ssl_context=context)
    if settings.broker_user:
        password = settings.broker_password.get_secret_value() if settings.broker_password else ""
        return NatsUserPassword(settings.broker_user, password, ssl_context=context)
    return NatsSecurity(ssl_context=context) if context is not None else None


def connect_options(settings: Settings) -> dict[str, Any]:
    """The same sign-in and TLS as keyword arguments of nats.connect (for clients outside FastStream),
    and a tenant user's own inbox prefix (rapport/tenants.py)."""
    options = {key: value for key, value in parse_security(broker_security(settings)).items()
               if value is not None and value is not False}
    if settings.broker_inbox_prefix:
        options["inbox_prefix"] = settings.broker_inbox_prefix
    return options


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Verifies the broker's certificate against RAPPORT_BROKER_TLS_CA (the system's CAs without it)
    and its name against the host in RAPPORT_BROKER_URL; presents the client certificate if set."""
    if not (settings.broker_tls_ca or settings.broker_tls_cert):
        return None
    names = "RAPPORT_BROKER_TLS_CA"
    try:
        context = ssl.create_default_context(
            cafile=str(_readable(settings.broker_tls_ca, names)) if settings.broker_tls_ca else None)
        if settings.broker_tls_cert and settings.broker_tls_key:
            names = "RAPPORT_BROKER_TLS_CERT and RAPPORT_BROKER_TLS_KEY"
            context.load_cert_chain(_readable(settings.broker_tls_cert, "RAPPORT_BROKER_TLS_CERT"),
                                    _readable(settings.broker_tls_key, "RAPPORT_BROKER_TLS_KEY"))
    except ssl.SSLError as error:
        raise BrokerRefused(f"{names}: not a usable certificate or key ({error.reason or type(error).__name__})") \
            from None
    return context


def _readable(path: Any, setting: str) -> str:
    try:
        with open(path, "rb"):
            return str(path)
    except OSError as error:
        raise BrokerRefused(f"{setting} names {path}, which cannot be read ({type(error).__name__})") from None


def sign_in_setting(settings: Settings, url: str) -> str:
    """Which setting holds the credentials the broker judged, to name in an error."""
    if settings.broker_creds:
        return "RAPPORT_BROKER_CREDS"
    if settings.broker_nkey_seed_file:
        return "RAPPORT_BROKER_NKEY_SEED_FILE"
    if settings.broker_user:
        return "RAPPORT_BROKER_USER and RAPPORT_BROKER_PASSWORD"
    if any(urlsplit(server).password or urlsplit(server).username for server in broker_servers(url)):
        return "the user and password in RAPPORT_BROKER_URL"
    return "none is set: RAPPORT_BROKER_USER and RAPPORT_BROKER_PASSWORD, RAPPORT_BROKER_CREDS or " \
           "RAPPORT_BROKER_NKEY_SEED_FILE"


def refusal(settings: Settings, url: str, error: BaseException) -> str | None:
    """What a connection error means for the operator, when it is about sign-in or TLS (retrying
    cannot cure those); None for anything else (a server down, a timeout)."""
    text = str(error).lower()
    if "authorization violation" in text or "authentication" in text:
        return f"the broker refused the sign-in ({str(error).removeprefix('nats: ').strip(chr(39))}); " \
               f"check the credentials: {sign_in_setting(settings, url)}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate was not accepted ({error.verify_message}): RAPPORT_BROKER_TLS_CA " \
               "names the CA that signed it, and the host in RAPPORT_BROKER_URL must be a name it was issued for"
    if isinstance(error, ssl.SSLError):
        return f"TLS with the broker failed ({error.reason or type(error).__name__}): check RAPPORT_BROKER_TLS_CA, " \
               "and RAPPORT_BROKER_TLS_CERT and RAPPORT_BROKER_TLS_KEY if the broker asks for a client certificate"
    if "tls required" in text or "no ssl context" in text:
        return "the broker requires TLS: set RAPPORT_BROKER_TLS_CA"
    return None


# a broker that cannot be reached before the first connection is said once, then this often
UNREACHABLE_REPEAT_SECONDS = 30.0


def without_credentials(url: str) -> str:
    """The broker's servers as they may be printed: any user and password in them left out."""
    return ",".join(urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
                    for parts in map(urlsplit, broker_servers(url)))


class SignInCheck:
    """nats-py's error callback (`on_error`). Until the first connection is made, an error retrying cannot cure
    (credentials refused, a certificate not accepted) ends the connect at once as BrokerRefused,
    raised from the callback as FastStream does for its own unrecoverable errors: with
    max_reconnect_attempts=-1 nats-py would otherwise try again for ever, and a service would
    never say why it does not start. A broker not reachable yet is retried, and said (once, then
    every UNREACHABLE_REPEAT_SECONDS): nothing else would log it. After the first connection, errors
    go on to FastStream's logging (or, for a plain client, are logged here by type and text, which
    carry no credentials)."""

    def __init__(self, settings: Settings, url: str, *, log_others: bool = False) -> None:
        self.settings, self.url, self.log_others = settings, url, log_others
        self.connected: Callable[[], bool] = lambda: False
        self._said_unreachable_at: float | None = None

    async def on_error(self, error: Exception) -> None:
        log = logging.getLogger("rapport.broker")
        if not self.connected():
            if problem := refusal(self.settings, self.url, error):
                raise BrokerRefused(problem) from None
            now = monotonic()
            if self._said_unreachable_at is None or now - self._said_unreachable_at >= UNREACHABLE_REPEAT_SECONDS:
                self._said_unreachable_at = now
                log.warning("cannot reach the broker at %s yet (%s: %s); trying again until it answers",
                            without_credentials(self.url), type(error).__name__, error)
            return
        if self.log_others:
            log.warning("broker connection: %s: %s", type(error).__name__, error)


def require_tls(settings: Settings, client: Client) -> None:
    """nats-py upgrades to TLS only when the server asks for it: with TLS configured, a broker that
    does not is refused rather than talked to in the clear."""
    if tls_context(settings) is not None and not (client._server_info or {}).get("tls_required"):
        raise BrokerRefused("RAPPORT_BROKER_TLS_CA is set but the broker does not use TLS: "
                            "refusing to send credentials and clinical data in the clear")


async def connect_client(settings: Settings, url: str, *, name: str, **options: Any) -> Client:
    """A plain nats-py client (rapport submit, bench, demo, deadletter) with the services' sign-in and TLS."""
    client = Client()
    check = SignInCheck(settings, url, log_others=True)
    connected = False
    check.connected = lambda: connected
    try:
        await client.connect(broker_servers(url), name=name, error_cb=check.on_error, **connect_options(settings),
                             **options)
        require_tls(settings, client)
    except BaseException:
        # closing a connection that never finished its TLS handshake can wait for ever: bounded
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 1)
        raise
    connected = True
    return client


def batch_pull(settings: Settings, wait_seconds: float | None = None) -> PullSub:
    """`wait_seconds`: how long a batch waits to fill after its first message (the setting's when None)."""
    return PullSub(batch_size=settings.batch_size, timeout=wait_seconds or settings.batch_wait_seconds, batch=True)


def consumer_config(settings: Settings, durable: str, subject: str) -> ConsumerConfig:
    # No max_deliver: the server must never give up on a message by itself, whatever the fault
    # (consumer.py decides, and dead-letters only poison and defects). ack_wait covers a slow batch;
    # a paused batch keeps its messages with in-progress acks.
    return ConsumerConfig(
        durable_name=durable, filter_subject=subject, ack_policy=ConsumerAckPolicy.EXPLICIT, max_deliver=-1,
        ack_wait=settings.ack_wait_seconds, max_ack_pending=5000,
    )
