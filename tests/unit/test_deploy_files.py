"""The deploy files: the profiles say what an acknowledgement means (one node syncs every write,
`sync_interval: always`; the R3 cluster an explicit interval, stated with its trade-off) and compose
runs each node from its profile's file and tells the services the same policy. Then cheap structural
checks of what deploy/check cannot see: the image runs as a numeric user and builds from an
allow-listed context, every service's healthcheck and readiness probe is /readyz, secrets are files
and no password is written down, the NATS image is the version Rapport bundles, the alert rules and
the dashboard read only metrics that exist, and the dashboard does not multiply per-replica gauges.
The YAML checks need PyYAML (podman-compose and kubernetes-validate, which deploy/check uses, bring
it) and are skipped without it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rapport.embedded_nats import SYNC_PATTERN, nats_server_binary, sync_interval_ns
from rapport.shared.metrics import REGISTRY
from rapport.shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def settings_of(path: Path) -> dict[str, str]:
    """`key: value` lines of a nats-server config (comments dropped, quotes stripped, blocks
    flattened: enough for these files)."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" in line and not line.endswith("{"):
            key, value = (part.strip() for part in line.split(":", 1))
            found[key] = value.strip('"')
    return found


def comments_of(path: Path) -> str:
    return " ".join(line.strip().lstrip("#").strip() for line in path.read_text().splitlines()
                    if line.strip().startswith("#"))


def service_block(compose: str, name: str) -> str:
    """The lines of one service in compose.yaml (two-space indented keys under `services:`)."""
    lines = compose.splitlines()
    start = lines.index(f"  {name}:")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def test_single_node_syncs_every_write() -> None:
    single = settings_of(DEPLOY / "nats" / "single.conf")
    assert single["sync_interval"] == "always"
    assert single["store_dir"] == "/data"
    assert not re.search(r"^\s*cluster\s*\{", (DEPLOY / "nats" / "single.conf").read_text(), re.MULTILINE)


def test_the_cluster_states_an_explicit_interval_and_its_trade_off() -> None:
    path = DEPLOY / "nats" / "cluster.conf"
    cluster = settings_of(path)
    interval = cluster["sync_interval"]
    assert interval != "always" and SYNC_PATTERN.match(interval)
    # a duration in nats config must be quoted: unquoted `10s` would not read as 10 seconds
    assert re.search(rf'^\s*sync_interval:\s*"{interval}"\s*$', path.read_text(), re.MULTILINE)
    assert sync_interval_ns(interval) <= 60 * 10**9, "more than a minute of acknowledged writes at risk"
    assert cluster["name"] == "rapport" and cluster["store_dir"] == "/data"
    text = comments_of(path).lower()
    assert "r3" in text and "power failure" in text and "crash" in text


def test_compose_runs_each_node_from_its_profile_and_tells_the_services() -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    for node in ("nats-1", "nats-2", "nats-3"):
        block = service_block(compose, node)
        assert '"-c", "/etc/nats/cluster.conf"' in block and f'"--name", "{node}"' in block, node
        assert "./nats/cluster.conf:/etc/nats/cluster.conf:ro" in block, node
    single = service_block(compose, "nats")
    assert "profiles: [single]" in single and "./nats/single.conf:/etc/nats/single.conf:ro" in single
    # the services' RAPPORT_BROKER_SYNC defaults to the cluster's interval, as /readyz reports it
    cluster_interval = settings_of(DEPLOY / "nats" / "cluster.conf")["sync_interval"]
    assert f"RAPPORT_BROKER_SYNC: ${{RAPPORT_BROKER_SYNC:-{cluster_interval}}}" in compose


# ---- image and build context ----------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"
SERVICES = ("ingest", "scoring", "alerts", "gateway")
SERVICE_UID = 10001


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                              if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in joined.splitlines()) if line]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [args.strip() for op, args in instructions(DOCKERFILE) if op == "USER"]
    # numeric, so that Kubernetes runAsNonRoot can check it without the image's /etc/passwd
    assert users and users[-1] == f"{SERVICE_UID}:{SERVICE_UID}"


def test_the_base_image_is_an_exact_patch_release_pinned_by_digest() -> None:
    froms = [args.split()[0] for op, args in instructions(DOCKERFILE) if op == "FROM"]
    stages = {args.split()[-1] for op, args in instructions(DOCKERFILE) if op == "FROM" and " AS " in args.upper()}
    external = [image for image in froms if image not in stages]
    assert external and all(re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?@sha256:[0-9a-f]{64}", image)
                            for image in external), external


def test_the_image_healthcheck_is_readiness() -> None:
    (healthcheck,) = [args for op, args in instructions(DOCKERFILE) if op == "HEALTHCHECK"]
    assert "/readyz" in healthcheck and "/healthz" not in healthcheck


def test_the_build_context_is_an_allow_list_of_what_the_dockerfile_copies() -> None:
    patterns = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert patterns[0] == "*", "everything is left out first"
    allowed = {pattern[1:] for pattern in patterns if pattern.startswith("!")}
    sources = {src for op, args in instructions(DOCKERFILE) if op == "COPY" and "--from" not in args
               for src in args.split()[:-1]}
    assert sources == allowed, "each COPY source is let in, and nothing else"
    # the embedded stack's data (clinical data), secrets and the rest stay out, even inside allowed dirs
    assert not any(name in {".rapport", ".git", ".venv", "tests", "deploy/secrets", "docs", ".ci"}
                   for name in allowed)
    assert "**/.rapport" in patterns and "**/__pycache__" in patterns


def test_the_healthcheck_passes_on_200_only_and_says_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    spec = importlib.util.spec_from_file_location("rapport_healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = self.path == "/healthz"
            body = b'{"ok": true}' if ready else b'{"ok": false, "reason": "database: timeout"}'
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = str(server.server_address[1])
    try:
        assert healthcheck.main(["rapport-healthcheck", "/healthz", port]) == 0
        capsys.readouterr()
        assert healthcheck.main(["rapport-healthcheck", "/readyz", port]) == 1
        # printed, so that `docker inspect` shows why the container is unhealthy
        assert capsys.readouterr().out.startswith('503 {"ok": false, "reason": "database: timeout"}')
    finally:
        server.shutdown()
        server.server_close()
    # nothing listening: a failure, not a crash
    assert healthcheck.main(["rapport-healthcheck", "/readyz", port]) == 1


def test_the_secrets_directory_is_never_committed() -> None:
    lines = (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == ["*", "!.gitignore"]


# ---- compose ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML comes with podman-compose / kubernetes-validate")


@pytest.fixture(scope="module")
def compose(yaml: Any) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def bundled_nats_version() -> tuple[int, int, int]:
    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return int(match[1]), int(match[2]), int(match[3])


def test_every_service_healthcheck_is_readiness(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and "/readyz" in test, name
        assert services[name]["command"][:2] == ["serve", name]
    # the migration is a one-off command: nothing to probe
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_the_nats_image_is_the_version_rapport_bundles(compose: dict[str, Any], yaml: Any) -> None:
    major, minor, _patch = bundled_nats_version()
    images = {name: svc["image"] for name, svc in compose["services"].items() if name.startswith("nats")}
    assert set(images) == {"nats", "nats-1", "nats-2", "nats-3"}
    helm = yaml.safe_load((DEPLOY / "kubernetes" / "nats" / "values.yaml").read_text())
    for tag in [image.split(":", 1)[1] for image in images.values()] + [helm["container"]["image"]["tag"]]:
        match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)-alpine", tag)
        assert match, f"{tag}: an exact release (and -alpine: the healthcheck needs wget)"
        assert (int(match[1]), int(match[2])) == (major, minor), f"{tag} vs bundled nats-server {major}.{minor}"


def test_secrets_are_files_and_no_password_is_written_down(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"\w+://[^/\s:@]+:[^@\s]+@", text), "credentials in a URL"
    declared = set(compose["secrets"])
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if "PASSWORD" in key or key.endswith("DATABASE_URL"):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
        for secret in service.get("secrets", []):
            assert (secret if isinstance(secret, str) else secret["source"]) in declared, (name, secret)
    for name in (*SERVICES, "migrate"):
        environment = compose["services"][name]["environment"]
        assert environment["RAPPORT_DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert "RAPPORT_DATABASE_URL" not in environment and "RAPPORT_BROKER_URL_FILE" not in environment
    for name in SERVICES:
        # the servers, without credentials; the services' user signs in with the password file
        environment = compose["services"][name]["environment"]
        assert "@" not in environment["RAPPORT_BROKER_URL"], name
        assert environment["RAPPORT_BROKER_USER"] == "rapport"
        assert environment["RAPPORT_BROKER_PASSWORD_FILE"] == "/run/secrets/nats_password"
        assert "nats_password" in compose["services"][name]["secrets"], name
    # every secret is a file deploy/make-secrets writes
    make_secrets = (DEPLOY / "make-secrets").read_text()
    for secret in compose["secrets"].values():
        file = re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", secret["file"])
        assert file.startswith("./secrets/") and Path(file).name in make_secrets, file


def test_grafana_wants_a_login_and_keeps_its_state(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    environment = {key: str(value).lower() for key, value in grafana["environment"].items()}
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]
    assert "grafana:/var/lib/grafana" in grafana["volumes"]
    assert "prometheus:/prometheus" in compose["services"]["prometheus"]["volumes"]
    assert {"grafana", "prometheus"} <= set(compose["volumes"])
    for name in ("grafana", "prometheus"):
        assert all(port.startswith("127.0.0.1:") for port in compose["services"][name]["ports"]), name


def test_compose_references_only_what_it_declares(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(".") or source in compose["volumes"], (name, volume)
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, volume)


def test_services_get_time_to_drain_before_they_are_killed(compose: dict[str, Any]) -> None:
    # uvicorn waits graceful_timeout + 5 s for requests, then the consumers drain (graceful_timeout)
    needed = 2 * Settings().graceful_timeout_seconds + 5
    for name in SERVICES:
        assert seconds(compose["services"][name]["stop_grace_period"]) > needed, name


def test_every_nats_node_mounts_the_users_file_its_config_includes(compose: dict[str, Any], tmp_path: Path) -> None:
    for node in ("nats", "nats-1", "nats-2", "nats-3"):
        assert {"source": "nats_auth", "target": "/etc/nats/auth.conf"} in compose["services"][node]["secrets"]
    for conf in ("single.conf", "cluster.conf"):
        assert re.search(r'^include "auth\.conf"$', (DEPLOY / "nats" / conf).read_text(), re.MULTILINE), conf
        # and the bundled server accepts it, with a users file as deploy/make-secrets writes it
        (tmp_path / conf).write_text((DEPLOY / "nats" / conf).read_text())
        (tmp_path / "auth.conf").write_text('authorization {\n  users = [\n    { user: rapport, password: "x" }\n'
                                            "  ]\n}\n")
        (tmp_path / "routes.conf").write_text('authorization { user: route, password: "x" }\n'
                                              'routes = [ "nats://route:x@127.0.0.1:6222" ]\n')
        subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / conf)], check=True, capture_output=True,
                       timeout=30)


# ---- Prometheus and Grafana -------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    # the gateway's metrics (HTTP answers, notification deliveries) are registered when its modules load
    import rapport.services.gateway.http
    import rapport.services.gateway.notifications.sender  # noqa: F401

    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(rapport_[a-z_]+)", expr))


def test_alert_rules_read_only_metrics_that_exist(yaml: Any) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    exprs = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    used = set().union(*map(metrics_in, exprs.values()))
    assert used and used <= exported_metric_names(), used - exported_metric_names()
    for wanted in ("rapport_consumer_paused", "rapport_messages_failed_total", "rapport_faults_total",
                   "rapport_submissions_total", "rapport_consumers_recreated_total", "rapport_outbox_unpublished"):
        assert wanted in used, wanted
    assert 'outcome="dead_lettered"' in exprs["RapportDeadLetters"]
    assert 'kind="defect"' in exprs["RapportDefects"]
    assert "hour()" in exprs["RapportNoSubmissions"] and "day_of_week()" in exprs["RapportNoSubmissions"]
    assert "up{" in exprs["RapportServiceUnavailable"]
    for service in SERVICES:  # a service never scraped at all is unavailable too
        assert f'absent(up{{job="rapport", service="{service}"}})' in exprs["RapportServiceUnavailable"], service
    assert 'status="503"' in exprs["RapportGatewayBrokerUnavailable"]
    assert 'status!="503"' in exprs["RapportGatewayErrors"]
    assert 'outcome="dead"' in exprs["RapportNotificationsDead"]
    for wanted in ("rapport_gateway_requests_total", "rapport_notification_deliveries_total"):
        assert wanted in used, wanted
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["rules.yml"]
    (job,) = prometheus["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == list(SERVICES), "every service is scraped"


def test_the_dashboard_reads_existing_metrics_and_does_not_multiply_replicas() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "rapport.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set().union(*map(metrics_in, exprs))
    assert used <= exported_metric_names(), used - exported_metric_names()
    # each replica exports the same value of these gauges (read from the shared database): a panel
    # takes one replica's value (max) before adding anything up
    same_on_every_replica = ("rapport_alerts_open", "rapport_alerts_oldest_unacknowledged_seconds",
                             "rapport_outbox_unpublished")
    for expr in exprs:
        for metric in same_on_every_replica:
            if metric in expr:
                assert re.search(rf"max by \([^)]*\) \({metric}\)", expr), expr
    (open_alerts,) = [expr for expr in exprs if "rapport_alerts_open" in expr]
    assert re.search(r"max by \((?=[^)]*tenant)(?=[^)]*kind)(?=[^)]*status)[^)]*\)", open_alerts), open_alerts
    provisioning = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "rapport.yml").read_text()
    assert "path: /etc/grafana/dashboards" in provisioning


# ---- Kubernetes ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes(yaml: Any) -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {resource["metadata"]["name"]: resource for resource in resources if resource["kind"] == kind}


def test_the_deployments_run_locked_down_with_probes_on_readiness_and_liveness(
        kubernetes: list[dict[str, Any]]) -> None:
    deployments = of_kind(kubernetes, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        assert deployment["metadata"]["namespace"] == "rapport"
        assert deployment["spec"]["replicas"] == 2
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == SERVICE_UID
        assert pod["terminationGracePeriodSeconds"] > 2 * Settings().graceful_timeout_seconds + 5
        (container,) = pod["containers"]
        assert container["args"][:2] == ["serve", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
        assert {"configMapRef": {"name": "rapport"}} in container["envFrom"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        (secrets,) = [volume for volume in pod["volumes"] if volume["name"] == mounts["/run/secrets/rapport"]]
        assert secrets["secret"]["secretName"] == "rapport-secrets"


def test_each_deployment_has_a_metrics_service_and_a_disruption_budget(kubernetes: list[dict[str, Any]]) -> None:
    services, budgets = of_kind(kubernetes, "Service"), of_kind(kubernetes, "PodDisruptionBudget")
    for name, deployment in of_kind(kubernetes, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["ports"][0]["port"] == 8080
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert budgets[name]["spec"]["minAvailable"] == 1
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_migration_job_and_the_settings(kubernetes: list[dict[str, Any]], yaml: Any) -> None:
    (job,) = of_kind(kubernetes, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == SERVICE_UID
    config = of_kind(kubernetes, "ConfigMap")["rapport"]["data"]
    assert config["RAPPORT_STREAM_REPLICAS"] == "3"
    assert "RAPPORT_DATABASE_URL" not in config and "@" not in config["RAPPORT_BROKER_URL"]
    assert config["RAPPORT_BROKER_USER"] == "rapport"
    assert config["RAPPORT_BROKER_PASSWORD_FILE"].startswith("/run/secrets/rapport/")
    for name, deployment in of_kind(kubernetes, "Deployment").items():
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        paths = {item["path"] for volume in volumes if "secret" in volume for item in volume["secret"]["items"]}
        assert config["RAPPORT_BROKER_PASSWORD_FILE"].rsplit("/", 1)[1] in paths, name
    assert config["RAPPORT_DATABASE_URL_FILE"].startswith("/run/secrets/rapport/")
    # the services report the broker's sync interval: the one the NATS chart is given
    helm = yaml.safe_load((DEPLOY / "kubernetes" / "nats" / "values.yaml").read_text())
    assert config["RAPPORT_BROKER_SYNC"] == helm["config"]["jetstream"]["merge"]["sync_interval"]
    assert helm["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert helm["config"]["jetstream"]["fileStore"]["enabled"] is True
    assert of_kind(kubernetes, "ServiceAccount")["rapport"]["automountServiceAccountToken"] is False


# ---- the gateway --------------------------------------------------------------------------------------


def test_the_gateway_in_compose_is_published_on_loopback_with_its_signing_key(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == ["serve", "gateway", "--host", "0.0.0.0", "--port", "8080"]
    # the one service people and clinic systems reach; loopback unless the operator says otherwise
    assert gateway["ports"] == ["${RAPPORT_GATEWAY_BIND:-127.0.0.1}:8480:8080"]
    environment = gateway["environment"]
    assert environment["RAPPORT_TOKEN_KEY_FILE"] == "/run/secrets/token_signing_key"
    assert "token_signing_key" in gateway["secrets"] and "token_signing_key" in compose["secrets"]
    assert environment["RAPPORT_OIDC_ISSUER"] == "${RAPPORT_OIDC_ISSUER:-}"
    assert {"RAPPORT_OIDC_AUDIENCE", "RAPPORT_GATEWAY_PUBLIC_URL"} <= set(environment)
    # everything the other services are told, the gateway is told too (its environment replaces theirs)
    assert compose["services"]["ingest"]["environment"].items() <= environment.items()
    assert gateway["depends_on"] == {"migrate": {"condition": "service_completed_successfully"},
                                     "postgres": {"condition": "service_healthy"}}
    # only the gateway holds the key that signs sign-ins
    for name in ("ingest", "scoring", "alerts", "migrate"):
        assert "token_signing_key" not in compose["services"][name]["secrets"], name


def test_make_secrets_writes_the_signing_key_once_and_the_broker_password_the_nodes_know(tmp_path: Path) -> None:
    import shutil

    from rapport.services.gateway.tokens import load_signing_key

    if shutil.which("openssl") is None:
        pytest.skip("deploy/make-secrets needs openssl for the gateway's signing key")
    secrets = tmp_path / "secrets"
    env = {"PATH": "/usr/bin:/bin", "RAPPORT_SECRETS_DIR": str(secrets)}
    subprocess.run([str(DEPLOY / "make-secrets")], env=env, check=True, capture_output=True, timeout=60)
    first = (secrets / "token_signing_key").read_bytes()
    load_signing_key(secrets / "token_signing_key")  # what the gateway reads: PKCS#8 Ed25519
    # the services' broker password is the one in the users file the NATS nodes include
    password = (secrets / "nats_password").read_text().strip()
    assert f'{{ user: rapport, password: "{password}" }}' in (secrets / "nats-auth.conf").read_text()
    subprocess.run([str(DEPLOY / "make-secrets")], env=env, check=True, capture_output=True, timeout=60)
    assert (secrets / "token_signing_key").read_bytes() == first, "replacing it would end every session"


def test_the_cluster_nodes_route_to_each_other_signed_in_and_keep_monitoring_inside(compose: dict[str, Any]) -> None:
    for node in ("nats-1", "nats-2", "nats-3"):
        assert {"source": "nats_routes", "target": "/etc/nats/routes.conf"} in compose["services"][node]["secrets"]
        assert "--routes" not in compose["services"][node]["command"], "routes with credentials come from the secret"
    assert re.search(r'cluster \{[^}]*include "routes\.conf"', (DEPLOY / "nats" / "cluster.conf").read_text())
    for conf in ("single.conf", "cluster.conf"):
        # NATS has no sign-in on its monitoring port: only the container's own healthcheck reaches it
        assert settings_of(DEPLOY / "nats" / conf)["http"] == "127.0.0.1:8222", conf


def test_make_secrets_gives_each_registered_tenant_its_user_and_the_routes_their_password(tmp_path: Path) -> None:
    import shutil

    from rapport.tenants import TenantRegistry

    if shutil.which("openssl") is None:
        pytest.skip("deploy/make-secrets needs openssl for the gateway's signing key")
    secrets = tmp_path / "secrets"
    acme = TenantRegistry(secrets / "tenants").add("acme")  # as `rapport tenants add acme --data-dir ...`
    rapport_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{rapport_bin}:/usr/bin:/bin", "RAPPORT_SECRETS_DIR": str(secrets)}
    subprocess.run([str(DEPLOY / "make-secrets")], env=env, check=True, capture_output=True, timeout=120)
    users = (secrets / "nats-auth.conf").read_text()
    assert acme.public_key in users and '"rapport.acme.in.submissions"' in users
    assert acme.seed_file.read_text().strip() not in users, "the seed stays with the clinic system"
    route = (secrets / "nats_route_password").read_text().strip()
    routes = (secrets / "nats-routes.conf").read_text()
    assert f'password: "{route}"' in routes and f"nats://route:{route}@nats-3:6222" in routes
    # the bundled server accepts the users and the routes as written, in the cluster node's config
    (tmp_path / "cluster.conf").write_text((DEPLOY / "nats" / "cluster.conf").read_text())
    shutil.copy(secrets / "nats-auth.conf", tmp_path / "auth.conf")
    shutil.copy(secrets / "nats-routes.conf", tmp_path / "routes.conf")
    subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / "cluster.conf")], check=True,
                   capture_output=True, timeout=30)
    # without rapport on PATH, registered tenants are not silently left out
    bare = {"PATH": "/usr/bin:/bin", "RAPPORT_SECRETS_DIR": str(secrets)}
    refused = subprocess.run([str(DEPLOY / "make-secrets")], env=bare, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "put rapport on PATH" in refused.stderr


def test_the_gateway_on_kubernetes_reads_its_signing_key_from_the_secret(kubernetes: list[dict[str, Any]]) -> None:
    deployment = of_kind(kubernetes, "Deployment")["gateway"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    (secrets,) = [volume for volume in pod["volumes"] if volume["name"] == "secrets"]
    items = {item["key"]: item["path"] for item in secrets["secret"]["items"]}
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets")
    assert env["RAPPORT_TOKEN_KEY_FILE"] == f"{mount}/{items['token_signing_key']}"
    assert env["RAPPORT_GATEWAY_PUBLIC_URL"].startswith("https://")
    # only the gateway holds the key that signs sign-ins
    for name, other in of_kind(kubernetes, "Deployment").items():
        volumes = other["spec"]["template"]["spec"]["volumes"]
        keys = {item["key"] for volume in volumes if "secret" in volume for item in volume["secret"]["items"]}
        assert ("token_signing_key" in keys) == (name == "gateway"), name
