"""The benchmark grid on a real Dask cluster (LocalCluster, TCP on 127.0.0.1), a worker killed mid-run,
the Slurm job script, and TLS.

Marked ``cluster``: they start worker processes but stay small (4 runs of 2048 steps), every cluster is
closed by its context manager, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="the cluster extra (pip install -e '.[cluster]')")

from sb3_natural.benchmark import executors, runner  # noqa: E402
from sb3_natural.benchmark.__main__ import main as benchmark_main  # noqa: E402

pytestmark = pytest.mark.cluster

GRID = ["--suite", "quick", "--algos", "a2c", "acktr", "--envs", "CartPole-v1", "--budget", "2048", "--seeds", "0", "1",
        "--eval-points", "2", "--eval-episodes", "2", "--no-progress"]  # fmt: skip
RUNS = runner.grid(["a2c", "acktr"], {"CartPole-v1": 2048}, [0, 1])


def _local_cluster():
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tcp", dashboard_address=None
    )


def _results(out: Path) -> dict[str, dict]:
    return {
        f"{r['algo']}/{r['env']}/seed{r['seed']}": r
        for r in (json.loads(p.read_text()) for p in out.glob("runs/*/*/*/result.json"))
    }


def test_dask_grid_gives_the_local_grids_scores(tmp_path):
    assert benchmark_main([*GRID, "--workers", "2", "--out", str(tmp_path / "local")]) == 0
    with _local_cluster() as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        code = benchmark_main(
            [*GRID, "--executor", "dask", "--scheduler", cluster.scheduler_address, "--out", str(tmp_path / "dask")]
        )
    assert code == 0
    local, dask = _results(tmp_path / "local"), _results(tmp_path / "dask")
    assert sorted(local) == sorted(dask) == sorted(r.key for r in RUNS)
    for key in local:
        assert dask[key]["final_mean"] == local[key]["final_mean"], key
        assert dask[key]["curve_means"] == local[key]["curve_means"], key
    # the report was written by the driver from the returned results
    assert (tmp_path / "dask" / "results.csv").is_file()
    # no training files were left in --out: the runs trained in the workers' temporary directories
    assert not list((tmp_path / "dask").glob("runs/*/*/*/logs"))


def test_a_worker_killed_mid_run_loses_no_result_and_writes_none_twice(tmp_path, monkeypatch):
    writes: list[str] = []
    write = runner.write_result

    def counting_write(out, run, result):
        writes.append(run.key)
        write(out, run, result)

    monkeypatch.setattr(runner, "write_result", counting_write)
    out = tmp_path / "bench"
    with _local_cluster() as cluster, distributed.Client(cluster) as client:
        executor = executors.DaskExecutor(client, close=[])
        box: dict = {}
        thread = threading.Thread(
            target=lambda: box.update(
                res=runner.run_grid(RUNS, out, eval_points=2, eval_episodes=2, progress=False, executor=executor)
            )
        )
        thread.start()
        deadline = time.time() + 120
        victim = None
        while victim is None and time.time() < deadline:  # a worker that is running a run
            busy = [addr for addr, tasks in client.processing().items() if tasks]
            victim = busy[0] if busy else None
            time.sleep(0.2)
        assert victim is not None, "no run started"
        time.sleep(2.0)  # into the run's training
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=600)
        assert not thread.is_alive(), "the grid did not finish"
    results, failures = box["res"]
    assert failures == []
    assert sorted(writes) == sorted(r.key for r in RUNS)  # every run written exactly once
    assert sorted(r["seed"] for r in results) == [0, 0, 1, 1]
    assert sorted(_results(out)) == sorted(r.key for r in RUNS)


def test_a_failing_run_is_reported_and_the_grid_goes_on(tmp_path):
    runs = [runner.Run("no_such_algo", "CartPole-v1", 0, 1024), runner.Run("a2c", "CartPole-v1", 0, 1024)]
    with _local_cluster() as cluster, distributed.Client(cluster) as client:
        results, failures = runner.run_grid(
            runs, tmp_path, eval_points=1, eval_episodes=1, progress=False, executor=executors.DaskExecutor(client, close=[])
        )
    assert len(results) == 1 and results[0]["algo"] == "a2c"
    assert len(failures) == 1 and "no_such_algo" in failures[0]
    error = (tmp_path / "runs" / "no_such_algo" / "CartPole-v1" / "seed0" / "error.txt").read_text()
    assert "no_such_algo" in error


def test_slurm_job_script_from_config_file_and_flags(tmp_path):
    jobqueue = pytest.importorskip("dask_jobqueue")
    config = tmp_path / "slurm.yml"
    config.write_text(
        "account: rl-lab\nmemory: 8GB\njob_extra_directives: ['--qos=short']\n"
        "scheduler_options: {host: 127.0.0.1, dashboard_address: null}\n"
    )
    kwargs = executors.slurm_cluster_kwargs(str(config), {"queue": "cpu", "walltime": "01:30:00", "memory": None})
    assert kwargs["cores"] == 1 and kwargs["processes"] == 1 and kwargs["memory"] == "8GB"
    with jobqueue.SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p cpu", "#SBATCH -A rl-lab", "#SBATCH -t 01:30:00", "#SBATCH --qos=short", "--nthreads 1"):
        assert line in script, line
    with pytest.raises(ValueError, match="slurm-jobs"):
        executors.slurm_executor(0, kwargs)


def test_cli_refuses_inconsistent_cluster_flags(capsys):
    with pytest.raises(SystemExit):
        benchmark_main([*GRID, "--executor", "dask"])
    assert "--scheduler" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark_main([*GRID, "--scheduler", "tcp://127.0.0.1:1"])
    with pytest.raises(ValueError, match="tls"):
        executors.security_from_args("ca.pem", None, None)


def test_tls_scheduler_needs_the_certificates(tmp_path):
    pytest.importorskip("cryptography")
    from distributed.security import Security

    sec = Security.temporary()  # a CA and a certificate, as PEM text
    files = {}
    for name, pem in (("ca", sec.tls_ca_file), ("cert", sec.tls_client_cert), ("key", sec.tls_client_key)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(pem)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        host="127.0.0.1",
        protocol="tls",
        security=sec,
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        security = executors.security_from_args(str(files["ca"]), str(files["cert"]), str(files["key"]))
        assert security.require_encryption
        with executors.DaskExecutor.connect(address, security=security) as ex:
            assert ex.client.submit(sum, [1, 2]).result(timeout=30) == 3
        with pytest.raises((OSError, TypeError, ValueError)):  # no certificates: no connection
            executors.DaskExecutor.connect(address, timeout=3)
