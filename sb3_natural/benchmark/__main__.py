"""``python -m sb3_natural.benchmark``: run a suite (or a custom grid) and write its reports.

    python -m sb3_natural.benchmark --suite quick --workers 2
    python -m sb3_natural.benchmark --suite classic --algos nac ppo --envs CartPole-v1 --seeds 0 1
    python -m sb3_natural.benchmark --suite quick --report-only
    python -m sb3_natural.benchmark --suite mujoco --executor dask --scheduler tcp://HOST:8786
    python -m sb3_natural.benchmark --suite mujoco --executor slurm --slurm-jobs 36 --slurm-queue cpu

Results go to ``benchmarks/results/<suite>/`` (runs/, results.csv, report.md, curves.png);
rerunning the same command resumes an interrupted grid. The reports cover every finished run in
the output folder, so several grids (or two processes on disjoint grids) can share one.
``--executor dask`` runs the grid on an existing Dask cluster and ``--executor slurm`` on Slurm jobs
started by dask-jobqueue (the ``cluster`` extra; docs/benchmark.md); results come back to this process.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sb3_natural.benchmark.runner import grid, load_all, load_result, run_grid
from sb3_natural.benchmark.suites import SUITES
from sb3_natural.extras import MissingExtraError, require_extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_natural.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick")
    parser.add_argument("--algos", nargs="+", help="subset (or other zoo keys) instead of the suite's algorithms")
    parser.add_argument("--envs", nargs="+", help="subset of the suite's envs")
    parser.add_argument("--budget", type=int, help="override every env's budget (steps)")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--eval-points", type=int, default=20, help="evaluations per run (every budget/eval_points steps)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--reference", default="ppo", help="algorithm for the probability of improvement")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<suite>")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the reports from finished runs")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="train every run with torch.set_flush_denormal(True) (python -m sb3_natural.train --flush-denormal)",
    )
    cluster = parser.add_argument_group("cluster executors (pip install 'sb3-natural[cluster]'; docs/benchmark.md)")
    cluster.add_argument(
        "--executor", choices=["local", "dask", "slurm"], default="local",
        help="local: --workers subprocesses here (default); dask: an existing Dask cluster (--scheduler); "
        "slurm: a dask-jobqueue SLURMCluster (--slurm-*)",
    )  # fmt: skip
    cluster.add_argument("--scheduler", help="the Dask scheduler's address, tcp://HOST:PORT or tls://HOST:PORT")
    cluster.add_argument("--tls-ca-file", help="TLS: the CA certificate the scheduler's certificate is signed by")
    cluster.add_argument("--tls-cert", help="TLS: this client's certificate")
    cluster.add_argument("--tls-key", help="TLS: this client's private key")
    cluster.add_argument("--dask-config", help="a YAML file of Dask settings (e.g. distributed.comm.tls) to load first")
    cluster.add_argument("--slurm-jobs", type=int, default=1, help="Slurm jobs to start (one Dask worker, one core each)")
    cluster.add_argument("--slurm-config", help="a YAML file of dask_jobqueue.SLURMCluster arguments")
    cluster.add_argument("--slurm-queue", help="Slurm partition (SLURMCluster's queue)")
    cluster.add_argument("--slurm-account", help="Slurm account")
    cluster.add_argument("--slurm-walltime", help="walltime of each job, e.g. 04:00:00")
    cluster.add_argument("--slurm-memory", help="memory of each job, e.g. 4GB")
    args = parser.parse_args(argv)
    try:  # running a grid needs rl-zoo3, the reports scipy: both in the zoo extra; dask / slurm the cluster extra
        what = "python -m sb3_natural.benchmark" + (" --report-only" if args.report_only else "")
        require_extra("zoo", what, ("scipy",) if args.report_only else ("rl_zoo3", "scipy"))
        if args.executor != "local" and not args.report_only:
            from sb3_natural.benchmark.executors import CLUSTER_MODULES

            require_extra("cluster", f"--executor {args.executor}", CLUSTER_MODULES[args.executor])
    except MissingExtraError as err:
        parser.error(str(err))
    if args.executor == "local" and (args.scheduler or args.slurm_config or args.tls_cert):
        parser.error("--scheduler, --slurm-config and --tls-* need --executor dask or slurm")
    if args.executor == "dask" and not args.scheduler:
        parser.error("--executor dask needs --scheduler tcp://HOST:PORT (or tls://HOST:PORT)")

    counts = {"--budget": args.budget, "--workers": args.workers, "--eval-points": args.eval_points}
    counts |= {"--eval-episodes": args.eval_episodes, "--slurm-jobs": args.slurm_jobs}
    for flag, value in counts.items():
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.seeds is not None and any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    if args.algos:
        known = _zoo_keys()
        unknown = [a for a in args.algos if a not in known]
        if unknown:
            parser.error(f"--algos {unknown} are not rl-zoo3 algorithm keys; available: {', '.join(sorted(known))}")

    suite = SUITES[args.suite]
    budgets = dict(suite.budgets)
    if args.envs:
        unknown = [e for e in args.envs if e not in budgets and args.budget is None]
        if unknown:
            parser.error(f"--envs {unknown} are not in suite {args.suite!r} ({sorted(budgets)}); give --budget")
        budgets = {e: budgets.get(e, args.budget or 0) for e in args.envs}
    if args.budget is not None:
        budgets = dict.fromkeys(budgets, args.budget)
    runs = grid(args.algos or suite.algos, budgets, args.seeds if args.seeds is not None else suite.seeds)
    out = args.out or Path("benchmarks/results") / args.suite
    if args.report_only:
        results = [r for r in (load_result(out, run) for run in runs) if r is not None]
        failures: list[str] = []
    else:
        executor = _executor(args)
        try:
            results, failures = run_grid(
                runs,
                out,
                args.workers,
                args.eval_points,
                args.eval_episodes,
                progress=not args.no_progress,
                flush_denormal=args.flush_denormal,
                executor=executor,
            )
        finally:
            if executor is not None:
                executor.close()
    from sb3_natural.benchmark.report import write_reports  # scipy, checked above

    everything = load_all(out) if out.is_dir() else []  # the reports cover every grid run into this folder
    if everything:
        paths = write_reports(everything, out, args.reference)
        print(
            f"{len(results)}/{len(runs)} runs of this grid finished; reports on the {len(everything)} runs in {out}: "
            f"{', '.join(str(p) for p in paths.values())}"
        )
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


def _zoo_keys() -> set[str]:
    """The algorithm keys a run can use: rl-zoo3's ``ALGOS`` with ours registered."""
    from rl_zoo3 import utils

    from sb3_natural.zoo import register

    register()
    return set(utils.ALGOS)


def _executor(args: argparse.Namespace) -> Any:
    """None for the local executor, else a connected :class:`~sb3_natural.benchmark.executors.DaskExecutor`."""
    if args.executor == "local":
        return None
    from sb3_natural.benchmark import executors

    executors.load_dask_config(args.dask_config)
    if args.executor == "dask":
        security = executors.security_from_args(args.tls_ca_file, args.tls_cert, args.tls_key)
        return executors.DaskExecutor.connect(args.scheduler, security=security)
    overrides = {"queue": args.slurm_queue, "account": args.slurm_account, "walltime": args.slurm_walltime}
    overrides["memory"] = args.slurm_memory
    return executors.slurm_executor(args.slurm_jobs, executors.slurm_cluster_kwargs(args.slurm_config, overrides))


if __name__ == "__main__":
    raise SystemExit(main())
