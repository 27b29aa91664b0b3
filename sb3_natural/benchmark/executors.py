"""Where a benchmark grid runs: on a Dask cluster (``--executor dask``) or on Slurm (``--executor slurm``).

The local executor (the default, no dependency) is :func:`~sb3_natural.benchmark.runner.run_grid`'s own
thread pool. The two here need the ``cluster`` extra (``pip install "sb3-natural[cluster]"``: Dask's
``distributed`` and ``dask-jobqueue``).

Each run is one Dask task: :func:`remote_train` trains it on a worker exactly as the local executor does
(the zoo CLI in a subprocess with one torch thread, :func:`~sb3_natural.benchmark.runner.train_run`) in a
temporary directory of the worker, and returns the run's outcome as a JSON string, which is the only
thing the driver takes from a worker; the driver writes ``result.json`` into ``--out``. No shared file
system is needed, and resumability is that of the local executor (a finished run is never submitted).
Workers need this package (same version) and its ``zoo`` extra installed, and one thread each
(``dask worker --nthreads 1``): a run uses one core.

Fault tolerance is Dask's: when a worker dies, the scheduler starts its runs again on other workers
(``distributed.scheduler.allowed-failures`` times, then the run is reported as failed). The driver writes
each finished run once, when its future completes. A run whose subprocess fails (non-zero exit) is
reported with its log tail in ``error.txt`` and the grid goes on.

Security: a Dask scheduler runs whatever code its clients send. Never expose one to an untrusted
network without TLS: pass ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` (or Dask's own
``distributed.comm.tls`` configuration, e.g. in a file given by ``--dask-config``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sb3_natural.benchmark.runner import Run, train_run
from sb3_natural.extras import require_extra

CLUSTER_MODULES = {"dask": ("dask", "distributed"), "slurm": ("dask", "distributed", "dask_jobqueue")}


def _require(module: str) -> Any:
    """Import ``module``; :class:`~sb3_natural.extras.MissingExtraError` naming the cluster extra when its
    top-level package is not installed."""
    import importlib

    require_extra("cluster", "the dask and slurm executors", (module.split(".")[0],))
    return importlib.import_module(module)


def remote_train(run: dict[str, Any], eval_points: int, eval_episodes: int, flush_denormal: bool) -> str:
    """Train one run on a worker, in a temporary directory removed afterwards; returns
    ``json.dumps(outcome)`` (see :func:`~sb3_natural.benchmark.runner.train_run`)."""
    workdir = Path(tempfile.mkdtemp(prefix="sb3n-run-"))
    try:
        outcome = train_run(Run(**run), workdir, eval_points, eval_episodes, None, flush_denormal, die_with_parent=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return json.dumps(outcome)


def security_from_args(ca_file: str | None, cert: str | None, key: str | None) -> Any:
    """Dask TLS settings from the flags (all three, or none: then Dask's configuration decides)."""
    given = [x is not None for x in (ca_file, cert, key)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--tls-ca-file, --tls-cert and --tls-key go together (give all three)")
    security = _require("distributed.security")
    return security.Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def load_dask_config(path: str | None) -> None:
    """Merge a YAML file of Dask settings (e.g. ``distributed.comm.tls``) into ``dask.config``."""
    if path is None:
        return
    import yaml

    dask = _require("dask")
    with open(path) as f:
        dask.config.update(dask.config.config, yaml.safe_load(f) or {}, priority="new")


class DaskExecutor:
    """Runs a grid's runs as tasks of a ``distributed.Client``.

    :param client: a connected ``distributed.Client``
    :param close: objects to close with :meth:`close` (the client, a Slurm cluster)
    """

    def __init__(self, client: Any, close: list[Any] | None = None) -> None:
        self.client = client
        self._close = close if close is not None else [client]

    @classmethod
    def connect(cls, scheduler: str, security: Any = None, timeout: float = 30.0) -> DaskExecutor:
        """Connect to an existing scheduler (``tcp://HOST:PORT`` or ``tls://HOST:PORT``)."""
        distributed = _require("distributed")
        if not scheduler:
            raise ValueError("--executor dask needs --scheduler tcp://HOST:PORT (or tls://HOST:PORT)")
        client = distributed.Client(scheduler, security=security, timeout=timeout)
        return cls(client)

    def map_runs(
        self, runs: list[Run], eval_points: int, eval_episodes: int, flush_denormal: bool
    ) -> Iterator[tuple[Run, dict]]:
        """Submit every run; yield ``(run, outcome)`` as they finish, anywhere on the cluster. A run whose
        task failed on Dask's side (its workers died ``allowed-failures`` times) gives a failed outcome."""
        distributed = _require("distributed")
        futures = {}
        for run in runs:
            fut = self.client.submit(
                remote_train, asdict(run), eval_points, eval_episodes, flush_denormal, pure=False,
                key=f"sb3n-{run.algo}-{run.env}-seed{run.seed}-{uuid.uuid4().hex[:8]}",
            )  # fmt: skip
            futures[fut] = run
        for fut in distributed.as_completed(futures):
            run = futures[fut]
            try:
                outcome = json.loads(fut.result())
            except Exception as err:  # e.g. KilledWorker: the run's workers kept dying
                outcome = {"ok": False, "returncode": None, "log_tail": f"{type(err).__name__}: {err}"}
            yield run, outcome

    def close(self) -> None:
        for obj in self._close:
            obj.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


SLURM_DEFAULTS: dict[str, Any] = {"cores": 1, "processes": 1, "memory": "4GB", "walltime": "02:00:00"}


def slurm_cluster_kwargs(config_file: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """``SLURMCluster`` keyword arguments: one core and one Dask worker per job (a run uses one core),
    then the YAML ``config_file`` (any ``dask_jobqueue.SLURMCluster`` argument), then the flags."""
    import yaml

    kwargs = dict(SLURM_DEFAULTS)
    if config_file is not None:
        with open(config_file) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"--slurm-config {config_file} must hold a mapping of SLURMCluster arguments")
        kwargs.update(loaded)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs


def slurm_executor(jobs: int, kwargs: dict[str, Any]) -> DaskExecutor:
    """A ``dask_jobqueue.SLURMCluster`` of ``jobs`` Slurm jobs (one Dask worker each) and its client."""
    if int(jobs) < 1:
        raise ValueError(f"--slurm-jobs must be >= 1, got {jobs}")
    jobqueue = _require("dask_jobqueue")
    distributed = _require("distributed")
    cluster = jobqueue.SLURMCluster(**kwargs)
    cluster.scale(jobs=int(jobs))
    client = distributed.Client(cluster)
    return DaskExecutor(client, close=[client, cluster])
