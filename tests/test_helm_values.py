"""docker/helm-values.yaml against the official Dagster Helm chart's documented values (helm/dagster/values.schema.json
of dagster-io/dagster, 1.13 line): every key we set is one the chart declares where it forbids others, every key
it requires is there, every enum holds one of its values — and the deployment carries what the code location
needs (the module, the settings the code reads, secrets only by reference)."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = yaml.safe_load((ROOT / "docker/helm-values.yaml").read_text())
FREE = None  # an object the chart leaves open (Kubernetes objects, maps of strings, Celery config)

# The chart's schema for the parts we set: allowed keys (None: any), required keys, enums.
IMAGE = {"allowed": {"repository", "tag", "pullPolicy"}, "required": {"repository", "pullPolicy"},
         "enums": {"pullPolicy": {"Always", "IfNotPresent", "Never"}}}
SCHEMA = {
    "": {"allowed": {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
                     "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
                     "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox",
                     "migrate", "telemetry", "serviceAccount", "global", "retention", "additionalInstanceConfig",
                     "concurrency"}},
    "global": {"allowed": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
                           "dagsterInstanceConfigMap", "postgresqlAuthWifEnabled"}},
    "dagster-user-deployments": {"allowed": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
                                 "required": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"}},
    "dagster-user-deployments.deployments[]": {
        "allowed": {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
                    "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations",
                    "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
                    "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts", "volumes",
                    "schedulerName", "initContainers", "sidecarContainers", "deploymentStrategy"},
        "required": {"name", "image", "port"}},
    "dagster-user-deployments.deployments[].image": IMAGE,
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"allowed": {"enabled"},
                                                                          "required": {"enabled"}},
    "runLauncher": {"allowed": {"type", "config"}, "required": {"type", "config"},
                    "enums": {"type": {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"}}},
    "runLauncher.config": {"allowed": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"}},
    "runLauncher.config.k8sRunLauncher": {
        "allowed": {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"},
        "required": {"imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets", "envVars",
                     "volumeMounts", "volumes"},
        "enums": {"imagePullPolicy": {"Always", "IfNotPresent", "Never"}}},
    "postgresql": {"allowed": {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                               "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service", "authProvider"},
                   "required": {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                                "postgresqlDatabase", "postgresqlParams", "service"}},
    "postgresql.image": IMAGE,
    "postgresql.service": {"allowed": {"port"}, "required": {"port"}},
    "computeLogManager": {"allowed": {"type", "config"}, "required": {"type", "config"},
                          "enums": {"type": {"NoOpComputeLogManager", "AzureBlobComputeLogManager",
                                             "GCSComputeLogManager", "S3ComputeLogManager",
                                             "LocalComputeLogManager", "CustomComputeLogManager"}}},
    "computeLogManager.config": {"allowed": {"azureBlobComputeLogManager", "gcsComputeLogManager",
                                             "s3ComputeLogManager", "localComputeLogManager",
                                             "customComputeLogManager"}},
    "computeLogManager.config.s3ComputeLogManager": {
        "allowed": {"bucket", "localDir", "prefix", "useSsl", "verify", "verifyCertPath", "endpointUrl",
                    "skipEmptyFiles", "uploadInterval", "uploadExtraArgs", "showUrlOnly", "region"},
        "required": {"bucket"}},
    "dagsterDaemon": {"allowed": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
                                  "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity",
                                  "tolerations", "podSecurityContext", "securityContext", "resources",
                                  "livenessProbe", "readinessProbe", "startupProbe", "annotations", "runMonitoring",
                                  "runRetries", "sensors", "schedules", "backfills", "schedulerName", "volumeMounts",
                                  "volumes", "initContainerResources", "checkDbReadyInitContainer", "logFormat",
                                  "extraContainers", "extraPrependedInitContainers"}},
    "dagsterDaemon.runCoordinator": {"allowed": {"enabled", "type", "config"},
                                     "required": {"enabled", "type", "config"},
                                     "enums": {"type": {"QueuedRunCoordinator", "CustomRunCoordinator"}}},
    "dagsterDaemon.runCoordinator.config": {"allowed": {"queuedRunCoordinator", "customRunCoordinator"}},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "allowed": {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
                    "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"}},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {
        "allowed": {"key", "value", "limit"}, "required": {"key", "limit"}},
    "dagsterDaemon.runMonitoring": {"allowed": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                                                "maxRuntimeSeconds", "pollIntervalSeconds", "maxResumeRunAttempts",
                                                "freeSlotsAfterRunEndSeconds"}},
    "dagsterDaemon.runRetries": {"allowed": {"enabled", "maxRetries", "retryOnAssetOrOpFailure"},
                                 "required": {"enabled"}},
    "rabbitmq": {"allowed": {"enabled", "image", "rabbitmq", "service", "volumePermissions"}},
    "telemetry": {"allowed": {"enabled"}, "required": {"enabled"}},
}
# which config block each type needs (the chart's if/then rules)
NEEDS = {("runLauncher", "K8sRunLauncher"): "k8sRunLauncher", ("runLauncher", "CeleryK8sRunLauncher"):
         "celeryK8sRunLauncher", ("computeLogManager", "S3ComputeLogManager"): "s3ComputeLogManager",
         ("dagsterDaemon.runCoordinator", "QueuedRunCoordinator"): "queuedRunCoordinator"}


def walk(value, path: str = "") -> list[str]:
    """Every way `value` at `path` breaks the chart's schema."""
    problems = []
    if isinstance(value, list):
        return [p for item in value for p in walk(item, f"{path}[]")]
    if not isinstance(value, dict):
        return []
    rule = SCHEMA.get(path)
    if rule is not None:
        where = path or "<top>"
        if rule.get("allowed") is not FREE:
            problems += [f"{where}: {k!r} is not a key of the chart" for k in value if k not in rule["allowed"]]
        problems += [f"{where}: the chart requires {k!r}" for k in rule.get("required", ()) if k not in value]
        problems += [f"{path}.{k}: {value[k]!r} is not one of {sorted(allowed)}" for k, allowed in
                     rule.get("enums", {}).items() if k in value and value[k] not in allowed]
    for key, inner in value.items():
        if f"{path}.{key}".lstrip(".") in SCHEMA or f"{path}.{key}[]".lstrip(".") in SCHEMA:
            problems += walk(inner, f"{path}.{key}".lstrip("."))
    return problems


def test_every_key_is_the_charts_and_every_required_one_is_there():
    assert walk(VALUES) == []
    for (section, kind), block in NEEDS.items():
        node = VALUES
        for part in section.split("."):
            node = node[part]
        if node["type"] == kind:
            assert block in node["config"], f"{section}.type={kind} needs config.{block}"


def test_the_check_catches_what_the_chart_would_refuse():
    broken = yaml.safe_load((ROOT / "docker/helm-values.yaml").read_text())
    broken["runLauncher"]["config"]["k8sRunLauncher"]["env"] = {"A": "b"}  # k8sRunLauncher has envVars, not env
    del broken["dagster-user-deployments"]["deployments"][0]["port"]
    broken["computeLogManager"]["type"] = "S3LogManager"
    found = walk(broken)
    assert any("'env' is not a key" in p for p in found)
    assert any("requires 'port'" in p for p in found)
    assert any("S3LogManager" in p for p in found)


def test_the_deployment_is_this_code_location_with_secrets_by_reference():
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "platform_assets.definitions"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "platform_assets.definitions"
    env = deployment["env"]
    assert env["AEGIS_EXECUTOR"] in ("in_process", "multiprocess"), "K8sRunLauncher runs steps in the run's pod"
    for name in ("AEGIS_SOURCE_URL", "AEGIS_WAREHOUSE_URL", "AEGIS_LAKE_URL"):
        assert not env[name].startswith(("sqlite:", "duckdb:", "file:")), f"{name}: pods share no disk"
        assert not re.search(r"://[^/@]*:[^/@]*@", env[name]), f"{name} holds a password: use the secret"
    assert not any(re.search(r"KEY|SECRET|PASSWORD", k) for k in env), "secrets belong in envSecrets"
    assert {"name": "aegis-env"} in deployment["envSecrets"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"], "run pods get the deployment's settings"
    assert VALUES["additionalInstanceConfig"]["concurrency"]["pools"]["default_limit"] == 1
