"""The `rapport` command."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rapport.shared.settings import Settings

if TYPE_CHECKING:
    from rapport.shared.messaging.deadletters import Filters

app = typer.Typer(help="Rapport: measurement-based care over an event broker.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
trajectories_app = typer.Typer(help="Expected trajectories for the not_on_track rule.", no_args_is_help=True)
app.add_typer(trajectories_app, name="trajectories")
deadletter_app = typer.Typer(help="Dead letters: list them, look at one, send them again.", no_args_is_help=True)
app.add_typer(deadletter_app, name="deadletter")
broker_app = typer.Typer(help="The broker's streams: check them, or create and fix them.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
tenants_app = typer.Typer(help="The tenant registry: each tenant's broker user for its clinic systems.",
                          no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
questionnaires_app = typer.Typer(help="Published Questionnaires Rapport knows, and each tenant's own.",
                                 no_args_is_help=True)
app.add_typer(questionnaires_app, name="questionnaires")
policy_app = typer.Typer(help="Each tenant's clinical policy: which alert rules run for which instruments, and "
                              "their thresholds.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

SERVICE_NAMES = ("ingest", "scoring", "alerts", "gateway")


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"data_dir": data_dir}) if data_dir else settings


def _broker_url(settings: Settings) -> str:
    if settings.broker_url:
        return settings.broker_url
    from rapport.stack import read_endpoints

    endpoints = read_endpoints(settings.data_dir)
    if not endpoints:
        typer.echo(
            f"No broker: set RAPPORT_BROKER_URL or start the stack with `rapport up` "
            f"(no {settings.data_dir / 'endpoints.json'})", err=True,
        )
        raise typer.Exit(2)
    return str(endpoints["broker_url"])


def _broker(settings: Settings, tenant: str | None = None) -> tuple[str, Settings]:
    """The broker's URL and how to sign in there: on the embedded stack as `tenant` (registered on first
    use) or as the services (rapport/tenants.py); on an external broker as configured."""
    from rapport.tenants import client_settings

    url = _broker_url(settings)
    return url, client_settings(settings, tenant)


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="default: RAPPORT_DATA_DIR or ./.rapport")]


@app.command()
def up(data_dir: DataDir = None) -> None:
    """Start broker, database and the four services; stop them all on Ctrl-C or SIGTERM."""
    from rapport.stack import Stack, StackError

    stack = Stack(_settings(data_dir))
    try:
        with stack:
            typer.echo("Rapport is up. Ctrl-C stops it.")
            reason = stack.supervise()
    except StackError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    if reason is not None:  # the stack stopped itself (a service kept crashing): say so to systemd / compose
        typer.echo(reason, err=True)
        raise typer.Exit(1)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="ingest | scoring | alerts | gateway")],
    host: str = "127.0.0.1",
    port: int = 8080,
) -> None:
    """Run one service (what `rapport up` starts four of; run any number of replicas)."""
    if service not in SERVICE_NAMES:
        typer.echo(f"unknown service {service!r}; expected one of {', '.join(SERVICE_NAMES)}", err=True)
        raise typer.Exit(2)
    import uvicorn

    from rapport.shared.logs import configure

    settings = Settings()
    configure(service, settings.log_level)
    _runtime, asgi = importlib.import_module(f"rapport.services.{service}.app").build(settings, _broker_url(settings))
    uvicorn.run(asgi, host=host, port=port, log_config=None, access_log=False, lifespan="on", loop="uvloop",
                http="httptools", timeout_graceful_shutdown=int(settings.graceful_timeout_seconds) + 5)


@app.command()
def token(
    tenant: Annotated[str, typer.Option(help="the tenant the token is for (the only tenant it reaches)")],
    role: Annotated[str, typer.Option(help="integration | clinician | lead | admin")],
    clinician: Annotated[str | None, typer.Option(help="the clinician's id (needed for role clinician)")] = None,
    ttl: Annotated[str, typer.Option(help="how long it is valid: 30m, 1h, 7d (at most 30d)")] = "1h",
    data_dir: DataDir = None,
) -> None:
    """Print a bearer token for the gateway, signed with the stack's key (created in the data dir if missing)."""
    from datetime import UTC, datetime

    from rapport.services.gateway.tokens import create_signing_key, load_signing_key, mint, parse_ttl

    settings = _settings(data_dir)
    path = settings.resolved_token_key_file()
    try:
        lifetime = parse_ttl(ttl)
        if create_signing_key(path):
            typer.echo(f"created the token signing key {path}", err=True)
        typer.echo(mint(load_signing_key(path), tenant=tenant, role=role, clinician=clinician,
                        audience=settings.oidc_audience, now=datetime.now(UTC), ttl=lifetime))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


@app.command("login-link")
def login_link(
    tenant: Annotated[str, typer.Option(help="the tenant the dashboard session is for")],
    role: Annotated[str, typer.Option(help="clinician | lead | admin")],
    clinician: Annotated[str | None, typer.Option(help="the clinician's id (needed for role clinician)")] = None,
    ttl: Annotated[str, typer.Option(help="how long the link can be opened: 10m (at most 1h)")] = "10m",
    data_dir: DataDir = None,
) -> None:
    """Print a one-time sign-in URL for the dashboard of the running stack (the gateway in endpoints.json)."""
    from datetime import UTC, datetime

    from rapport.services.gateway.signin import link_url, mint_link
    from rapport.services.gateway.tokens import load_signing_key, parse_ttl
    from rapport.stack import read_endpoints

    settings = _settings(data_dir)
    gateway = (read_endpoints(settings.data_dir) or {}).get("gateway")
    path = settings.resolved_token_key_file()
    if not isinstance(gateway, str) or not path.exists():
        typer.echo(f"No running gateway: start the stack with `rapport up` (no gateway in "
                   f"{settings.data_dir / 'endpoints.json'}, or no signing key at {path})", err=True)
        raise typer.Exit(2)
    try:
        token = mint_link(load_signing_key(path), tenant=tenant, role=role, clinician=clinician,
                          audience=settings.oidc_audience, now=datetime.now(UTC), ttl=parse_ttl(ttl))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    typer.echo(link_url(gateway, token))


@app.command("audit")
def audit(
    tenant: Annotated[str | None, typer.Option(help="one tenant's trail; default: every tenant")] = None,
    subject: Annotated[str | None, typer.Option(help="who: the token's or session's subject")] = None,
    action: Annotated[str | None, typer.Option(help="sign_in, read_alerts, act_on_alerts, read_audit, ...")] = None,
    resource: Annotated[str | None, typer.Option(help="alert/ID, client/ID (and everything under it)")] = None,
    since: Annotated[str | None, typer.Option(help="ISO-8601 time with offset, or a span back: 30m, 2h, 7d")] = None,
    until: Annotated[str | None, typer.Option(help="ISO-8601 time with offset, or a span back")] = None,
    limit: int = 200,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    data_dir: DataDir = None,
) -> None:
    """The audit trail, newest first: who did what to which record, when, from where, and the outcome
    (read from RAPPORT_DATABASE_URL or the embedded SQLite file)."""
    from datetime import UTC, datetime

    from rapport.deadletter import parse_when
    from rapport.services.gateway.audit import AuditFilters, read_trail

    now = datetime.now(UTC)
    try:
        filters = AuditFilters(tenant=tenant, subject=subject, action=action, resource=resource,
                               since=parse_when(since, now), until=parse_when(until, now))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    typer.echo(asyncio.run(read_trail(_settings(data_dir).database_url_of("gateway"), filters, limit, as_json)))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate RAPPORT_DATABASE_URL (or the embedded SQLite files, one per service) to the newest schema."""
    from rapport.database import upgrade
    from rapport.stack import SERVICES, redact

    settings = Settings()
    for url in dict.fromkeys(settings.database_url_of(name) for name in SERVICES):
        asyncio.run(upgrade(url, revision))
        typer.echo(f"{redact(url)} is at {revision}")


@db_app.command("bench-locks")
def db_bench_locks(
    processes: Annotated[int, typer.Option(help="writers committing at once, as a stack's services do")] = 5,
    count: Annotated[int, typer.Option("--count", "-n", help="commits per writer")] = 400,
    rate: Annotated[float, typer.Option(help="commits per second per writer")] = 100.0,
    rounds: Annotated[int, typer.Option(help="runs of each handler, alternating")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Wait for SQLite's write lock (in a temporary file) with SQLite's own busy handler and with Rapport's
    tries, in one run on the same disk."""
    from rapport.lock_bench import lines, run

    results = run(processes=processes, count=count, rate=rate, rounds=rounds)
    typer.echo(json.dumps(results, indent=2) if as_json else "\n".join(lines(results)))


Tenants = Annotated[list[str] | None, typer.Option("--tenant", help="repeat for several; default: every tenant")]


@trajectories_app.command("fit")
def trajectories_fit(tenant: Tenants = None, data_dir: DataDir = None, calibration: Annotated[bool, typer.Option(
        "--calibration", help="then fit both methods on four episodes in five and report, per session, the share "
                              "of the held-out fifth beyond the boundary")] = False) -> None:
    """Fit expected trajectories from the stored scores (RAPPORT_DATABASE_URL or the embedded SQLite) and
    store them; the alerts service uses them within a minute."""
    from rapport.trajectories import calibrate_stored, describe, describe_calibration, fit_stored

    url = _settings(data_dir).database_url_of("alerts")
    typer.echo(describe(asyncio.run(fit_stored(url, tenant or [])), cells=False))
    if calibration:
        typer.echo(describe_calibration(asyncio.run(calibrate_stored(url, tenant or []))))


@trajectories_app.command("show")
def trajectories_show(tenant: Tenants = None, data_dir: DataDir = None) -> None:
    """Print the stored fits, cell by cell: intake band, session, episodes, expected score, boundary."""
    from rapport.trajectories import describe, stored_fits

    typer.echo(describe(asyncio.run(stored_fits(_settings(data_dir).database_url_of("alerts"), tenant or [])),
                        cells=True))


@app.command()
def submit(
    files: Annotated[list[Path], typer.Argument(help="native or FHIR JSON files", exists=True, dir_okay=False)],
    tenant: Annotated[str, typer.Option(help="the tenant the submissions are for")],
    timeout: float = 30.0,
    http: Annotated[bool, typer.Option("--http", help="through the running gateway (endpoints.json's gateway), "
                                       "with a token of role integration signed with the stack's key")] = False,
    data_dir: DataDir = None,
) -> None:
    """Publish files to a running stack and print each answer: what clinic IT uses to check a mapping."""
    from rapport.submit import submit_files, submit_files_http

    settings = _settings(data_dir)
    if http:
        from rapport.bench import integration_token

        ok = asyncio.run(submit_files_http(_gateway_url(settings), integration_token(settings, tenant), files, timeout))
    else:
        url, signed_in = _broker(settings, tenant)
        ok = asyncio.run(submit_files(url, tenant, files, timeout, signed_in))
    raise typer.Exit(0 if ok else 1)


def _gateway_url(settings: Settings) -> str:
    from rapport.stack import read_endpoints

    gateway = (read_endpoints(settings.data_dir) or {}).get("gateway")
    if not isinstance(gateway, str) or not settings.resolved_token_key_file().exists():
        typer.echo(f"No running gateway: start the stack with `rapport up` (no gateway in "
                   f"{settings.data_dir / 'endpoints.json'}, or no signing key)", err=True)
        raise typer.Exit(2)
    return gateway


@app.command()
def demo(
    clients: int = 12, sessions: int = 10, seed: int = 7,
    serve: Annotated[bool, typer.Option("--serve", help="keep the stack running and print dashboard sign-in links")
                     ] = False,
    data_dir: DataDir = None,
) -> None:
    """Run the stack on the embedded default, push a synthetic cohort through it, print a summary."""
    from rapport.demo import run_demo

    raise typer.Exit(run_demo(_settings(data_dir) if data_dir else None, clients=clients, sessions=sessions, seed=seed,
                              serve=serve))


@app.command()
def evaluate(
    clients: Annotated[int, typer.Option(help="synthetic clients evaluated, session by session")] = 60,
    sessions: int = 10, seed: int = 7,
    history_clients: Annotated[int, typer.Option(help="earlier clients the trajectories are fitted on")] = 240,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    cohort: Annotated[Path | None, typer.Option(
        "--cohort", help="a labelled cohort (JSON Lines, rapport-labelled-cohort/1, README) to score the rules on")
    ] = None,
    curves: Annotated[bool, typer.Option(
        "--curves", help="score the rules on a cohort drawn from published recovery curves (seeded, --clients)")
    ] = False,
    write: Annotated[Path | None, typer.Option(
        "--write", help="with --curves: write the cohort to this file (rapport-labelled-cohort/1) and run nothing")
    ] = None,
    early_endings: Annotated[bool, typer.Option(
        "--early-endings", help="with --curves: improvers end at their first reliably improved session (a synthetic "
                                "assumption, to show the survivorship bias of expected trajectories)")] = False,
    data_dir: DataDir = None,
) -> None:
    """Each alert rule's precision, recall and lead time against a seeded cohort with planted truth,
    a clinic's labelled cohort (--cohort FILE) or a cohort from recovery curves (--curves)."""
    from rapport.evaluate import describe, describe_cohort, run_evaluation

    if cohort is not None or curves:
        from rapport.evaluate import curve_cohorts, read_cohort_file, run_cohort
        from rapport.labelled_cohort import CohortError

        if cohort is not None and curves:
            typer.echo("--cohort and --curves: one or the other", err=True)
            raise typer.Exit(2)
        if cohort is not None:
            try:
                labelled = read_cohort_file(cohort)
            except (CohortError, OSError) as exc:
                typer.echo(f"{cohort}: {exc}", err=True)
                raise typer.Exit(2) from None
            report = run_cohort(_settings(data_dir) if data_dir else None, labelled, source=str(cohort))
        else:
            labelled, history, made = curve_cohorts(clients, history_clients, seed, early_endings=early_endings)
            if write is not None:
                write.write_text("\n".join(labelled.lines()) + "\n", encoding="utf-8")
                typer.echo(f"wrote {write}: {len(labelled.submissions)} submissions, {len(labelled.labels)} labels")
                return
            report = run_cohort(_settings(data_dir) if data_dir else None, labelled, history=history,
                                source=f"recovery curves, seed {seed}" + (", early endings" if early_endings else ""),
                                extra=made)
        typer.echo(json.dumps(report, indent=2) if as_json else describe_cohort(report))
        return
    report = run_evaluation(_settings(data_dir) if data_dir else None, clients=clients, sessions=sessions, seed=seed,
                            history_clients=history_clients)
    typer.echo(json.dumps(report, indent=2) if as_json else describe(report))


@app.command()
def bench(
    count: Annotated[int, typer.Option("--count", "-n", help="submissions to send")] = 2000,
    rate: Annotated[float, typer.Option(help="submissions per second; 0 = flat out")] = 0.0,
    tenant: str = "bench",
    history: Annotated[int, typer.Option(help="earlier sessions per episode before the measured ones")] = 0,
    episodes: Annotated[int, typer.Option(help="episodes the submissions are spread over")] = 200,
    embedded: Annotated[bool, typer.Option(help="start a stack for the run (else use a running one)")] = False,
    compare_baseline: Annotated[bool, typer.Option(
        "--baseline", help="then the same load through a bare three-hop pipeline on the same broker and database")
    ] = False,
    http: Annotated[bool, typer.Option(
        "--http", help="then the same load through the gateway (POST to 201) against the broker path's answers")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    data_dir: DataDir = None,
) -> None:
    """Drive submissions through a running pipeline; print throughput and latency percentiles."""
    from rapport.bench import run_bench

    settings = _settings(data_dir)
    result = run_bench(settings, count=count, rate=rate, tenant=tenant, history=history, episodes=episodes,
                       embedded=embedded, compare_baseline=compare_baseline, http=http,
                       broker_url=None if embedded else _broker_url(settings))
    typer.echo(json.dumps(result, indent=2) if as_json else result["text"])


Service = Annotated[str | None, typer.Option(help="ingest | scoring | alerts | gateway")]
Tenant = Annotated[str | None, typer.Option(help="one tenant's dead letters")]
Reason = Annotated[str | None, typer.Option(help="poison, defect, or text the reason contains")]
Since = Annotated[str | None, typer.Option(help="ISO-8601 time with offset, or a span back: 30m, 2h, 7d")]


def _filters(service: str | None, tenant: str | None, reason: str | None, since: str | None,
             until: str | None) -> Filters:
    from datetime import UTC, datetime

    from rapport.deadletter import parse_when
    from rapport.shared.messaging.deadletters import Filters

    now = datetime.now(UTC)
    try:
        return Filters(service=service, tenant=tenant, reason=reason, since=parse_when(since, now),
                       until=parse_when(until, now))
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@deadletter_app.command("list")
def deadletter_list(
    service: Service = None, tenant: Tenant = None, reason: Reason = None, since: Since = None,
    until: Since = None, limit: int = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    data_dir: DataDir = None,
) -> None:
    """Dead letters, oldest first: sequence, when, tenant, service, deliveries, reason (never bodies)."""
    from rapport.deadletter import list_command

    filters = _filters(service, tenant, reason, since, until)
    typer.echo(asyncio.run(list_command(*_broker(_settings(data_dir)), filters, limit, as_json)))


@deadletter_app.command("show")
def deadletter_show(
    sequence: int,
    save: Annotated[Path | None, typer.Option(help="write the original body to this file (mode 0600)")] = None,
    data_dir: DataDir = None,
) -> None:
    """One dead letter's headers: reason, detail, original subject and message id, deliveries, size."""
    from rapport.deadletter import show_command

    code, text = asyncio.run(show_command(*_broker(_settings(data_dir)), sequence, save))
    typer.echo(text, err=code != 0)
    raise typer.Exit(code)


@deadletter_app.command("redrive")
def deadletter_redrive(
    sequences: Annotated[list[int] | None, typer.Argument(help="dead letters to send again")] = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter the filters match")] = False,
    service: Service = None, tenant: Tenant = None, reason: Reason = None, since: Since = None,
    until: Since = None, data_dir: DataDir = None,
) -> None:
    """Publish dead letters to their original subjects again (after the fix), then remove them.
    The consumers' inboxes recognise a message that was handled after all."""
    from rapport.deadletter import redrive_command

    if bool(sequences) == every:
        typer.echo("give dead-letter sequence numbers, or --all with filters", err=True)
        raise typer.Exit(2)
    filters = _filters(service, tenant, reason, since, until) if every else None
    code, text = asyncio.run(redrive_command(*_broker(_settings(data_dir)), sequences or [], filters))
    typer.echo(text)
    raise typer.Exit(code)


@broker_app.command("check")
def broker_check(data_dir: DataDir = None) -> None:
    """Each stream Rapport needs on the configured broker: subjects, replicas, storage, consumers,
    and whether it is as Rapport expects. Exits 1 when something is off."""
    from rapport.broker_admin import check_command

    url, settings = _broker(_settings(data_dir))
    code, text = asyncio.run(check_command(settings, url))
    typer.echo(text)
    raise typer.Exit(code)


@broker_app.command("init")
def broker_init(data_dir: DataDir = None) -> None:
    """Create the streams as the services would, add the subjects an upgrade needs and raise replicas to
    RAPPORT_STREAM_REPLICAS (for services running without permission to manage streams)."""
    from rapport.broker_admin import init_command

    url, settings = _broker(_settings(data_dir))
    code, text = asyncio.run(init_command(settings, url))
    typer.echo(text)
    raise typer.Exit(code)


@tenants_app.command("add")
def tenants_add(
    tenant: Annotated[str, typer.Argument(help="the tenant id ([a-z0-9_-], at most 64 characters)")],
    data_dir: DataDir = None,
) -> None:
    """Register a tenant: a broker user (NKey) for its clinic systems, its seed in <data dir>/tenants/T.nk
    (0600), allowed only rapport.<tenant>.in.> to publish and rapport.<tenant>.> to read. The running
    embedded broker lets it in at once; for an external broker, prints the entry to install."""
    from rapport.tenants import BrokerReloadFailed, add_command

    try:
        typer.echo(add_command(tenant, _settings(data_dir).data_dir.resolve()))
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except BrokerReloadFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@tenants_app.command("entries")
def tenants_entries(data_dir: DataDir = None) -> None:
    """Each registered tenant's entry for a broker's `authorization { users = [...] }`, one a line
    (what deploy/make-secrets puts beside the services' user)."""
    from rapport.tenants import TenantRegistry

    for user in TenantRegistry.of(_settings(data_dir).data_dir.resolve()).users():
        typer.echo(user.config_entry())


@tenants_app.command("list")
def tenants_list(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    data_dir: DataDir = None,
) -> None:
    """The registered tenants and their broker users' public keys (never the seeds)."""
    from rapport.tenants import list_command as list_tenants

    typer.echo(list_tenants(_settings(data_dir).data_dir.resolve(), as_json))


@app.command()
def instruments(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the instrument registry with each parameter's confidence and sources."""
    from rapport.shared.instruments import load_registry

    registry = load_registry()
    if as_json:
        typer.echo(json.dumps([i.model_dump(mode="json") | {"alert_scope": i.alert_scope(),
                                                            "runs_change_rules": i.runs_change_rules}
                               for i in registry], indent=2))
        return
    typer.echo(f"{'id':<8} {'kind':<9} {'items':>5} {'range':<9} {'licence':<14} {'least sure':<11} title")
    for ins in registry:
        low, high = ins.total_range
        mark = {"verified": "verified", "secondary": "secondary", "unverified": "UNVERIFIED"}[ins.least_confidence]
        typer.echo(f"{ins.id:<8} {ins.kind:<9} {len(ins.scored_items):>5} {f'{low:g}-{high:g}':<9} "
                   f"{ins.licence.status:<14} {mark:<11} {ins.title}")
        for block_name in ("structure", "scoring", "missing", "bands", "caseness", "reliable_change",
                           "concern_cutoff", "purpose"):
            block = getattr(ins, block_name)
            if block is not None:
                typer.echo(f"{'':<8} {block_name:<16} {block.confidence:<10} sources {', '.join(block.source)}")
        for crit in ins.critical_items:
            typer.echo(f"{'':<8} {'critical item ' + str(crit.item):<16} {crit.confidence:<10} "
                       f"sources {', '.join(crit.source)}")
        typer.echo(f"{'':<8} {'alert rules':<16} {ins.alert_scope()}")


@questionnaires_app.command("list")
def questionnaires_list(
    tenant: Annotated[str | None, typer.Option(help="also this tenant's imported Questionnaires")] = None,
    data_dir: DataDir = None,
) -> None:
    """The catalogue of published Questionnaires: canonical, version, instrument, source."""
    from rapport.questionnaires import QuestionnaireError, describe_list, load_entries, tenant_forms

    try:
        imported = asyncio.run(tenant_forms(_settings(data_dir).database_url_of("ingest"), tenant)) if tenant else []
    except QuestionnaireError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(describe_list(load_entries(), imported, tenant))


@questionnaires_app.command("show")
def questionnaires_show(
    url: Annotated[str, typer.Argument(help="the Questionnaire's canonical url, with or without |version")],
    tenant: Annotated[str | None, typer.Option(help="look in this tenant's imported Questionnaires first")] = None,
    data_dir: DataDir = None,
) -> None:
    """One Questionnaire's linkId -> item map and answer weights."""
    from rapport.questionnaires import QuestionnaireError, show, tenant_forms

    try:
        imported = asyncio.run(tenant_forms(_settings(data_dir).database_url_of("ingest"), tenant)) if tenant else []
        typer.echo(show(url, imported, tenant))
    except QuestionnaireError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@questionnaires_app.command("import")
def questionnaires_import(
    file: Annotated[Path, typer.Argument(help="a FHIR R4 Questionnaire (JSON)", exists=True, dir_okay=False)],
    tenant: Annotated[str, typer.Option(help="the tenant whose Questionnaire it is (the only tenant it applies to)")],
    instrument: Annotated[str | None, typer.Option(help="the instrument, when its code and url name none")] = None,
    data_dir: DataDir = None,
) -> None:
    """Store a tenant's own Questionnaire (linkIds and answer weights read from it) for ingest to apply."""
    from rapport.questionnaires import QuestionnaireError, read_file, store

    try:
        form = read_file(file, instrument)
        typer.echo(asyncio.run(store(_settings(data_dir).database_url_of("ingest"), tenant, form)))
    except QuestionnaireError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


# What deleting a mapping does, said in the command's help and the README (ingest reads a tenant's mappings
# once per batch, in the batch's transaction).
QUESTIONNAIRE_REMOVAL = (
    "Ingest reads a tenant's mappings once per batch: a batch that read the mapping before the deletion "
    "committed is still read with it; every later batch, including submissions already sent but not yet "
    "read, is read without it (by the catalogue and the linkId conventions, or refused with the reason "
    "and may be sent again, as a new message, once a mapping is imported). Nothing already accepted changes: stored "
    "submissions, their scores and alerts stay as they are and nothing is re-scored.")


@questionnaires_app.command("mappings")
def questionnaires_mappings(
    tenant: Annotated[str, typer.Option(help="the tenant whose imported Questionnaires to list")],
    data_dir: DataDir = None,
) -> None:
    """A tenant's imported Questionnaires: canonical, version, instrument, linkIds, when imported, id."""
    from rapport.questionnaires import QuestionnaireError, describe_imports, imports

    try:
        stored = asyncio.run(imports(_settings(data_dir).database_url_of("ingest"), tenant))
        typer.echo(describe_imports(stored, tenant))
    except QuestionnaireError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@questionnaires_app.command("remove", help=(
    "Delete a tenant's imported Questionnaire (URL|version as `mappings` lists it; a bare URL is the one "
    "imported without a version). " + QUESTIONNAIRE_REMOVAL))
def questionnaires_remove(
    url: Annotated[str, typer.Argument(help="the imported Questionnaire's canonical url, with |version if it has one")],
    tenant: Annotated[str, typer.Option(help="the tenant whose mapping it is")],
    data_dir: DataDir = None,
) -> None:
    from rapport.questionnaires import QuestionnaireError, remove

    try:
        typer.echo(asyncio.run(remove(_settings(data_dir).database_url_of("ingest"), tenant, url)))
    except QuestionnaireError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


PolicyFile = Annotated[Path, typer.Option("--file", help="the policy, TOML (.toml) or JSON", exists=True,
                                         dir_okay=False)]


def _refused(error: Exception) -> typer.Exit:
    from rapport.policy import PolicyError

    typer.echo(str(error), err=True)
    for problem in error.problems if isinstance(error, PolicyError) else []:
        typer.echo(f"  {problem}", err=True)
    return typer.Exit(1)


@policy_app.command("show")
def policy_show(
    tenant: Annotated[str, typer.Option(help="the tenant whose policy the alert rules run under")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON only on stdout")] = False,
    data_dir: DataDir = None,
) -> None:
    """The tenant's effective policy: every value the rules read, each with its source (the sourced default,
    or the tenant's own with the version that set it), and which rules run on which instruments."""
    from rapport.policy import describe, show

    effective = asyncio.run(show(_settings(data_dir).database_url_of("alerts"), tenant))
    typer.echo(effective.model_dump_json(indent=2) if as_json else describe(effective))


@policy_app.command("set")
def policy_set(
    tenant: Annotated[str, typer.Option(help="the tenant the policy is for")],
    file: PolicyFile,
    signed_off_by: Annotated[str, typer.Option("--signed-off-by", help="who signed the policy off (required)")],
    data_dir: DataDir = None,
) -> None:
    """Store the file as the tenant's next policy version (refused as `validate` refuses it); new evaluations
    run under it, alerts already raised keep the version they ran under."""
    from datetime import UTC, datetime

    from rapport.policy import PolicyError, read_file, set_policy

    try:
        policy = asyncio.run(set_policy(_settings(data_dir).database_url_of("alerts"), tenant, read_file(file),
                                        signed_off_by, datetime.now(UTC)))
    except PolicyError as error:
        raise _refused(error) from None
    typer.echo(f"{tenant}: clinical policy version {policy.version}, signed off by {policy.signed_off_by} on "
               f"{policy.signed_off_at:%Y-%m-%d %H:%M} UTC; new evaluations run under it")


@policy_app.command("validate")
def policy_validate(file: PolicyFile) -> None:
    """Check a policy file without storing it: each problem names the rule, instrument and field and what is
    allowed (a threshold within the instrument's range; a rule only on an instrument it can use)."""
    from rapport.policy import PolicyError, read_file, validate

    try:
        problems = validate(read_file(file))
    except PolicyError as error:
        raise _refused(error) from None
    if problems:
        raise _refused(PolicyError(f"{file}: refused ({len(problems)} problem{'s' if len(problems) > 1 else ''})",
                                   problems))
    typer.echo(f"{file}: a valid clinical policy")


@app.command()
def docs(out: Path = Path("docs/asyncapi"), openapi_out: Path = Path("docs/openapi")) -> None:
    """Write the AsyncAPI documents of the three services (one JSON file each) and the gateway's OpenAPI document."""
    from rapport.asyncapi import write_asyncapi, write_openapi

    for path in [*write_asyncapi(out), write_openapi(openapi_out)]:
        typer.echo(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
