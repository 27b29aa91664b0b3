"""Run a benchmark grid through ``python -m sb3_natural.train``, in parallel and resumably.

Every run is one subprocess with one torch thread (:func:`train_run`), trained by the zoo CLI with its zoo config
(ours from ``zoo_configs/``, SB3's and sb3-contrib's from rl-zoo3's files), with a deterministic
evaluation (``eval_episodes`` episodes) every ``budget / eval_points`` steps. Where rl-zoo3's file
has no entry for an env but has an older version of it (``HalfCheetah-v4`` for ``HalfCheetah-v5``),
that entry is used under the new name (see :func:`reference_entry`). A run is finished
when its ``result.json`` exists; a finished run is never repeated, and an interrupted one is
restarted from scratch, so a killed grid continues where it stopped. The runs execute on this machine
(a pool of ``workers`` threads, each waiting on its subprocess) or on a Dask cluster
(:mod:`sb3_natural.benchmark.executors`), whose workers send each run's result back to this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_natural.benchmark.callbacks import TIMING_ENV_VAR
from sb3_natural.configs import ENV_VAR as CONFIGS_ENV_VAR


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    algo: str
    env: str
    seed: int
    budget: int

    @property
    def key(self) -> str:
        return f"{self.algo}/{self.env}/seed{self.seed}"


def grid(algos: Iterable[str], budgets: dict[str, int], seeds: Iterable[int]) -> list[Run]:
    """All (algo, env, seed) runs, envs with their budget, in a stable order."""
    return [Run(a, e, int(s), int(b)) for e, b in budgets.items() for a in algos for s in seeds]


def run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / run.algo / run.env / f"seed{run.seed}"


def load_result(out: Path, run: Run) -> dict[str, Any] | None:
    """The finished run's result, None if it has not finished; an error if it ran with another budget."""
    path = run_dir(out, run) / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result["budget"] != run.budget:
        raise ValueError(
            f"{path} was trained for {result['budget']} steps, this grid asks {run.budget} (--budget): "
            "use another --out for another budget"
        )
    return result


def load_all(out: Path) -> list[dict[str, Any]]:
    """Every finished run under ``out``, whichever grid ran it (reports cover the whole folder)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/*/*/result.json"))]


def _env_version(env_id: str) -> tuple[str, int] | None:
    name, sep, version = env_id.rpartition("-v")
    return (name, int(version)) if sep and version.isdigit() else None


def reference_entry(algo: str, env: str) -> tuple[str, dict[str, Any]] | None:
    """rl-zoo3's entry for an older version of ``env`` when its file for ``algo`` lacks ``env``.

    rl-zoo3 tunes the MuJoCo envs at v4 (``HalfCheetah-v4``); our suites use v5, whose dynamics
    are the same up to bug fixes. Returns (the entry's env id, its hyperparameters) for the newest
    older version, or None when the file has ``env`` itself, is not rl-zoo3's (our keys), or has no
    version of it (rl-zoo3 then reports the missing entry itself).
    """
    import rl_zoo3  # imported here: rl-zoo3 is slow to import
    from rl_zoo3.utils import ALGOS

    path = Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"
    parsed = _env_version(env)
    if algo not in ALGOS or not path.is_file() or parsed is None:
        return None
    entries = yaml.safe_load(path.read_text())
    if env in entries:
        return None
    older = [(v[1], key) for key in entries if (v := _env_version(key)) and v[0] == parsed[0] and v[1] < parsed[1]]
    if not older:
        return None
    key = max(older)[1]
    return key, entries[key]


def train_run(
    run: Run,
    workdir: Path,
    eval_points: int = 20,
    eval_episodes: int = 10,
    timeout: float | None = None,
    flush_denormal: bool = False,
    die_with_parent: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one run in ``workdir`` (an empty directory) with the zoo CLI in a subprocess.

    Returns ``{"ok": True, "result": {...}}`` (the run's result: plain numbers, lists and strings) or
    ``{"ok": False, "returncode": rc, "log_tail": ...}``. It writes nothing outside ``workdir``, so it
    runs as well on this machine (the local executor) as on a cluster worker (the Dask executors); the
    caller writes ``result.json``. ``die_with_parent``: the subprocess is killed when its parent dies
    (Linux), so that a lost cluster worker leaves no orphan training.
    """
    workdir = workdir.resolve()
    logs = workdir / "logs"
    timing = workdir / "timing.json"
    cmd = [
        sys.executable, "-m", "sb3_natural.train",
        "--algo", run.algo, "--env", run.env, "--seed", str(run.seed), "-n", str(run.budget),
        "-f", str(logs), "--eval-freq", str(max(run.budget // eval_points, 1)), "--eval-episodes", str(eval_episodes),
        "--n-eval-envs", "1", "--verbose", "0",
        "-params", "callback:'sb3_natural.benchmark.callbacks.UpdateTimer'",
    ]  # fmt: skip
    if flush_denormal:
        cmd.append("--flush-denormal")
    fallback = reference_entry(run.algo, run.env)
    if fallback is not None:
        conf = workdir / "zoo_config.yml"
        conf.write_text(yaml.safe_dump({run.env: fallback[1]}))
        cmd += ["--conf-file", str(conf)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", TIMING_ENV_VAR: str(timing)}
    if env.get(CONFIGS_ENV_VAR):  # the run starts in workdir: a relative folder is meant from here
        env[CONFIGS_ENV_VAR] = str(Path(env[CONFIGS_ENV_VAR]).resolve())
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=workdir,
        preexec_fn=_parent_death_signal() if die_with_parent else None,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"ok": False, "returncode": proc.returncode, "log_tail": proc.stderr[-20000:]}
    evals = np.load(next(logs.glob(f"{run.algo}/{run.env}_*/evaluations.npz")))
    means = evals["results"].mean(axis=1)
    timing_data = json.loads(timing.read_text()) if timing.is_file() else {}
    result = {
        **asdict(run),
        "final_mean": float(means[-1]),
        "final_std": float(evals["results"][-1].std()),
        "curve_steps": [int(s) for s in evals["timesteps"]],
        "curve_means": [float(m) for m in means],
        "wall_s": wall,
        "steps_per_s": run.budget / wall,
        "mean_update_s": timing_data.get("mean_update_s"),
        "n_updates": timing_data.get("updates"),
        "zoo_entry": fallback[0] if fallback is not None else run.env,
        "flush_denormal": flush_denormal,
    }
    return {"ok": True, "result": result}


def _parent_death_signal() -> Any:
    """A ``preexec_fn`` that makes the training subprocess receive SIGKILL when the thread that started it
    dies (Linux's ``PR_SET_PDEATHSIG``), resolved in the parent so that the child only makes one call;
    None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    kill = int(signal.SIGKILL)
    return lambda: prctl(1, kill)  # PR_SET_PDEATHSIG = 1


def write_result(out: Path, run: Run, result: dict[str, Any]) -> None:
    """``result.json`` of a finished run, written atomically (a reader never sees half a file)."""
    rdir = run_dir(out, run)
    rdir.mkdir(parents=True, exist_ok=True)
    tmp = rdir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.rename(rdir / "result.json")


def write_failure(out: Path, run: Run, outcome: dict[str, Any]) -> str:
    """``error.txt`` of a failed run (the subprocess's log tail); returns the failure's one-line report."""
    rdir = run_dir(out, run)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "error.txt").write_text(outcome.get("log_tail", ""))
    return f"{run.key} failed (exit {outcome.get('returncode')}); see {rdir / 'error.txt'}"


def run_one(
    run: Run,
    out: Path,
    eval_points: int = 20,
    eval_episodes: int = 10,
    timeout: float | None = None,
    flush_denormal: bool = False,
) -> dict:
    """Train and evaluate one run in its directory under ``out`` (or return its stored result)."""
    out = out.resolve()  # the training subprocess runs in the run's own directory
    done = load_result(out, run)
    if done is not None:
        return done
    rdir = run_dir(out, run)
    if rdir.exists():  # an interrupted attempt: start again
        shutil.rmtree(rdir)
    rdir.mkdir(parents=True)
    outcome = train_run(run, rdir, eval_points, eval_episodes, timeout, flush_denormal)
    if not outcome["ok"]:
        raise RuntimeError(write_failure(out, run, outcome))
    write_result(out, run, outcome["result"])
    return outcome["result"]


def run_grid(
    runs: list[Run],
    out: Path,
    workers: int = 2,
    eval_points: int = 20,
    eval_episodes: int = 10,
    progress: bool = True,
    flush_denormal: bool = False,
    executor: Any = None,
) -> tuple[list[dict], list[str]]:
    """Run what is not finished yet, ``workers`` at a time on this machine, or on ``executor`` (a
    :class:`~sb3_natural.benchmark.executors.DaskExecutor`); returns (results, failures)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    failures: list[str] = []
    todo = []
    for r in runs:
        done = load_result(out, r)
        if done is None:
            todo.append(r)
        else:
            results.append(done)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="benchmark runs", unit="run")
    if executor is not None:
        for run, outcome in executor.map_runs(todo, eval_points, eval_episodes, flush_denormal):
            if outcome["ok"]:
                write_result(out, run, outcome["result"])
                results.append(outcome["result"])
            else:  # one failed run must not stop the grid
                failures.append(write_failure(out, run, outcome))
            if bar is not None:
                bar.update(1)
    else:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {
                pool.submit(run_one, r, out, eval_points, eval_episodes, flush_denormal=flush_denormal): r for r in todo
            }
            for fut in as_completed(futures):
                try:
                    results.append(fut.result())
                except Exception as err:  # one failed run must not stop the grid
                    failures.append(str(err))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return results, failures
