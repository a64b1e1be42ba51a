"""The docker/ deployment, checked with what runs here (no Docker engine on this machine): the compose
file, the Dockerfile, the instance config and the example environment are parsed and cross-checked."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
INSTANCE = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
DOCKERFILE = (DOCKER / "Dockerfile").read_text()


def variables_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for package in ("platform_assets", "resources", "sensors"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"\"(AEGIS_[A-Z_]+|AWS_[A-Z_]+)\"", path.read_text()))  # quoted whole names
    return found


def test_every_service_is_there_with_a_healthcheck_and_starts_in_order():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "s3", "rabbitmq", "code", "webserver", "daemon", "metrics", "capture",
                             "worker"}
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name
    assert services["code"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                              "s3": {"condition": "service_healthy"}}
    for name in ("webserver", "daemon", "metrics"):
        assert services[name]["depends_on"] == {"code": {"condition": "service_healthy"}}
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    assert services["metrics"]["ports"] == ["127.0.0.1:9464:9464"]
    declared = set(COMPOSE["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(("/", "."))}
    assert used == declared == {"postgres-data", "s3-data", "rabbitmq-data"}
    assert services["worker"]["depends_on"] == {"code": {"condition": "service_healthy"},
                                                "rabbitmq": {"condition": "service_healthy"}}
    assert services["worker"]["deploy"]["replicas"] >= 2, "steps spread over more than one worker"
    assert "/var/run/docker.sock" in " ".join(services["daemon"]["volumes"]), "DockerRunLauncher needs the socket"
    assert "wal_level=logical" in services["postgres"]["command"], "the change capture needs logical decoding"
    assert services["capture"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                 "s3": {"condition": "service_healthy"}}


def test_every_variable_the_code_reads_is_set_for_the_platform_containers():
    environment = COMPOSE["services"]["code"]["environment"]
    for name in ("webserver", "daemon", "metrics", "capture", "worker"):
        assert COMPOSE["services"][name]["environment"] == environment
    missing = variables_read_by_the_code() - set(environment)
    assert not missing, f"read by the code but not set in docker-compose.yml: {sorted(missing)}"
    run_env = set(INSTANCE["run_launcher"]["config"]["env_vars"])
    needed_by_runs = {v for v in variables_read_by_the_code() if v in environment}
    assert needed_by_runs <= run_env, f"run containers would miss: {sorted(needed_by_runs - run_env)}"


def test_the_instance_is_production_shaped():
    assert set(INSTANCE["storage"]) == {"postgres"}
    assert INSTANCE["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert INSTANCE["concurrency"]["runs"]["max_concurrent_runs"] > 0
    assert INSTANCE["concurrency"]["runs"]["tag_concurrency_limits"]
    assert INSTANCE["concurrency"]["pools"]["default_limit"] == 1, "pools (warehouse, lake writers) are limited"
    assert INSTANCE["run_monitoring"]["enabled"], "a run whose container died must end, not hang"
    assert INSTANCE["run_launcher"]["class"] == "DockerRunLauncher"
    assert INSTANCE["run_retries"]["enabled"] is True
    assert INSTANCE["compute_logs"]["class"] == "S3ComputeLogManager"
    instance_env = set(re.findall(r"env: ([A-Z_]+)", (DOCKER / "dagster.yaml").read_text()))
    assert instance_env <= set(COMPOSE["services"]["code"]["environment"])


def test_the_dockerfile_is_multi_stage_pinned_cached_non_root_and_healthchecked():
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert len(bases) >= 2 and all(re.match(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*$", b) for b in bases), bases
    assert DOCKERFILE.index("COPY pyproject.toml") < DOCKERFILE.index("COPY platform_assets"), \
        "dependencies are installed in a layer of their own, before the code is copied"
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", DOCKERFILE, re.MULTILINE)
    for image in (s["image"] for s in COMPOSE["services"].values() if "build" not in s and "image" in s):
        assert not image.endswith(":latest") or image.startswith("aegis-platform"), image


def test_no_secret_is_written_in_docker_files():
    example = (DOCKER / ".env.example").read_text()
    assert "LOCAL TRIAL ONLY" in example
    for line in example.splitlines():
        if re.match(r"^(POSTGRES_PASSWORD|S3_SECRET_KEY|AEGIS_PII_KEY)=", line):
            assert "local-only" in line, line
    compose_text = (DOCKER / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "S3_SECRET_KEY", "AEGIS_PII_KEY"):
        assert re.search(rf"\$\{{{secret}:\?", compose_text), f"{secret} must come from the environment"
    assert "password: {env: DAGSTER_PG_PASSWORD}" in (DOCKER / "dagster.yaml").read_text()
