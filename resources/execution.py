"""Where a run's steps execute, as a setting: `AEGIS_EXECUTOR` = `in_process` (the default: one process, fastest on
a small machine), `multiprocess` (a process per step on this host) or `celery` (each step sent through a broker,
`AEGIS_CELERY_BROKER`, to Dagster's Celery workers on any host: `make worker`). Restores keep the in-process fast
path unless `AEGIS_RESTORE_EXECUTOR` says otherwise (same values).

With Celery nothing may pass through one host's disk: Dagster's storage must be PostgreSQL, and every URL the steps
read or write must reach the same data from every worker — an object store or a server, or a path the operator
declares shared (`AEGIS_SHARED_PATHS=true`, e.g. NFS mounted at the same place on every worker). Otherwise the run
is refused, naming the setting that is local. A worker that dies in the middle of a step gives its step back to the
broker (late acknowledgement), so another worker runs it again: steps write whole partitions, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
from dagster_celery import celery_executor
from dagster_celery.executor import CELERY_CONFIG

EXECUTOR_VAR = "AEGIS_EXECUTOR"
RESTORE_EXECUTOR_VAR = "AEGIS_RESTORE_EXECUTOR"
BROKER_VAR = "AEGIS_CELERY_BROKER"
BACKEND_VAR = "AEGIS_CELERY_BACKEND"
QUEUE_VAR = "AEGIS_CELERY_QUEUE"  # the shared queue (several deployments on one broker each take their own)
SHARED_PATHS_VAR = "AEGIS_SHARED_PATHS"
DEFAULT_BROKER = "pyamqp://guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "rpc://"
CHOICES = ("in_process", "multiprocess", "celery")
# what each worker runs with (the same block `make worker` hands to `dagster-celery worker start -y`): a step is
# acknowledged only when it is done, and handed back to the broker when its worker is lost, so another takes it
CELERY_SETTINGS = {"task_acks_late": True, "task_reject_on_worker_lost": True, "worker_prefetch_multiplier": 1,
                   "broker_connection_retry_on_startup": True}
# the URLs a step opens, and the scheme prefixes that are one host's files
LOCAL_URLS = {"AEGIS_SOURCE_URL": ("sqlite:",), "AEGIS_LAKE_URL": ("file:", "/"),
              "AEGIS_WAREHOUSE_URL": ("duckdb:", "sqlite:")}


class ExecutionSettingError(ValueError):
    """An execution setting with a value Aegis does not know."""


def chosen(variable: str = EXECUTOR_VAR, env: Mapping[str, str] | None = None) -> str:
    value = (os.environ if env is None else env).get(variable, "").strip() or "in_process"
    if value not in CHOICES:
        raise ExecutionSettingError(f"{variable}={value!r} is not an executor: use one of {', '.join(CHOICES)}")
    return value


def celery_config(env: Mapping[str, str] | None = None) -> dict:
    """The Celery block both sides use: the run's executor config and the workers' `-y` file."""
    env = os.environ if env is None else env
    return {"broker": env.get(BROKER_VAR) or DEFAULT_BROKER, "backend": env.get(BACKEND_VAR) or DEFAULT_BACKEND,
            "config_source": {**CELERY_SETTINGS, "task_default_queue": env.get(QUEUE_VAR) or "dagster"}}


def local_settings(instance: dg.DagsterInstance, env: Mapping[str, str] | None = None) -> list[str]:
    """What stops the steps of a run from running on other hosts: Dagster's storage off PostgreSQL, and URLs
    that are one host's files (unless the operator declared the paths shared)."""
    env = os.environ if env is None else env
    found = []
    storage = type(instance.run_storage).__module__
    if not storage.startswith("dagster_postgres"):
        found.append(f"Dagster's storage ({type(instance.run_storage).__name__} in DAGSTER_HOME="
                     f"{env.get('DAGSTER_HOME', '?')}/dagster.yaml) is on this host: use `storage: postgres`")
    if env.get(SHARED_PATHS_VAR, "").lower() not in ("1", "true", "yes"):
        for variable, prefixes in LOCAL_URLS.items():
            value = env.get(variable, "")
            if value.startswith(prefixes):
                found.append(f"{variable} is a file on this host ({value.split(':', 1)[0]}): use a server or an object "
                             f"store, or set {SHARED_PATHS_VAR}=true if every worker mounts the same path")
    return found


@dg.executor(name="aegis_celery", config_schema=CELERY_CONFIG,
             requirements=dg.multiple_process_executor_requirements())
def aegis_celery_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's Celery executor, refusing a run whose steps would read one host's files on another host."""
    problems = local_settings(init_context.instance)
    if problems:
        raise dg.DagsterInvariantViolationError(
            f"{EXECUTOR_VAR}=celery runs steps on other hosts, but " + "; ".join(problems))
    return celery_executor.executor_creation_fn(init_context)


def executor_from_env(variable: str = EXECUTOR_VAR, env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor `variable` names (read when the code location loads: a wrong value fails the load, naming it)."""
    name = chosen(variable, env)
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    return aegis_celery_executor.configured(celery_config(env), name="aegis_celery")


def restore_executor(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """Restores and the jobs the watches launch: in process (no second interpreter to wait for) unless told."""
    return executor_from_env(RESTORE_EXECUTOR_VAR, env)
