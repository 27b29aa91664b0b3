"""Reports of a benchmark grid: CSV, Markdown tables with robust statistics, learning-curve PNGs.

Statistics (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"), computed
with SciPy:

* IQM: the interquartile mean, ``scipy.stats.trim_mean(x, 0.25)``;
* 95% confidence intervals: percentile bootstrap over seeds, ``scipy.stats.bootstrap``;
* normalized scores: ``(score - lo) / (hi - lo)`` per env, lo/hi the lowest and highest final
  score of any run in the grid on that env (a grid-relative normalization, stated in the report);
* probability of improvement P(X > Y): the Mann-Whitney U statistic over ``n m`` per env
  (``scipy.stats.mannwhitneyu``, ties count 1/2), averaged over envs, with a bootstrap CI.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

CSV_FIELDS = [
    "algo", "env", "seed", "budget", "final_mean", "final_std", "wall_s", "steps_per_s", "mean_update_s", "n_updates",
    "zoo_entry", "flush_denormal",
]  # fmt: skip


def iqm(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean (the mean of the middle 50%)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def bootstrap_ci(x: np.ndarray, statistic, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of ``statistic`` over the first axis of ``x`` (rows resampled jointly)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2 or np.allclose(x, x.flat[0]):
        v = float(statistic(x, axis=0))
        return v, v
    res = stats.bootstrap(
        (np.arange(x.shape[0]),),
        lambda idx, axis: np.apply_along_axis(lambda i: statistic(x[i.astype(int)], axis=0), axis, idx),
        n_resamples=n_resamples,
        method="percentile",
        random_state=seed,
        vectorized=True,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over envs; ``x`` is [n, envs], ``y`` is [m, envs]."""
    values = []
    for j in range(x.shape[1]):
        u = stats.mannwhitneyu(x[:, j], y[:, j], alternative="two-sided").statistic
        values.append(u / (x.shape[0] * y.shape[0]))
    return float(np.mean(values))


def _by(results: list[dict]) -> dict[tuple[str, int], dict[str, list[dict]]]:
    """{(env, budget): {algo: runs}}: runs of one env at two budgets are two tasks, never one table."""
    table: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(results, key=lambda r: (r["env"], int(r["budget"]), r["algo"], r["seed"])):
        table[(r["env"], int(r["budget"]))][r["algo"]].append(r)
    return table


def write_csv(results: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in sorted(results, key=lambda r: (r["env"], r["algo"], r["seed"])):
            # zoo_entry: the config entry the run trained with (runs recorded before it existed used env's own)
            writer.writerow({**r, "zoo_entry": r.get("zoo_entry", r["env"]), "flush_denormal": r.get("flush_denormal", False)})


def markdown(results: list[dict], reference: str = "ppo") -> str:
    """Per-env tables (one per env and budget) and the aggregate across envs."""
    table = _by(results)
    lines: list[str] = []
    for (env, budget), algos in table.items():
        lines += [f"### {env} ({budget} steps)", ""]
        lines += [
            "| algorithm | seeds | final mean +/- std | IQM [95% CI] | steps/s | update (ms) |",
            "|---|---|---|---|---|---|",
        ]
        for algo, runs in algos.items():
            finals = np.array([r["final_mean"] for r in runs])
            if len(runs) > 1:
                lo, hi = bootstrap_ci(finals, iqm)
                ci = f"[{lo:.1f}, {hi:.1f}]"
            else:  # a bootstrap over one seed has zero width
                ci = "[n/a: 1 seed]"
            upd = [r["mean_update_s"] for r in runs if r.get("mean_update_s") is not None]
            upd_s = f"{1e3 * float(np.median(upd)):.1f}" if upd else "n/a"
            lines.append(
                f"| {algo} | {len(runs)} | {finals.mean():.1f} +/- {finals.std():.1f} | {float(iqm(finals)):.1f} "
                f"{ci} | {np.median([r['steps_per_s'] for r in runs]):.0f} | {upd_s} |"
            )
        lines.append("")
    agg = aggregate(results, reference)
    if agg:
        lines += ["### Aggregate over envs (grid-normalized scores)", ""]
        kept, seeds = aggregate_members(results)
        n_used = len(seeds) * len(kept) * len(table)
        if n_used < len(results):  # say which runs the aggregate leaves out while a grid is incomplete
            left_out = sorted({r["algo"] for r in results} - set(kept))
            who = "every algorithm" if not left_out else "every algorithm in it"
            line = (
                f"Over seeds {', '.join(map(str, seeds))}, the seeds {who} has finished on every env "
                f"({n_used} of {len(results)} runs)."
            )
            if left_out:
                line += f" Left out until more of their runs finish: {', '.join(left_out)}."
            lines += [line, ""]
        lines += [f"| algorithm | IQM [95% CI] | P(better than {reference}) [95% CI] |", "|---|---|---|"]
        for algo, row in agg.items():
            poi = row.get("poi")
            poi_s = "-" if poi is None else f"{poi[0]:.2f} [{poi[1]:.2f}, {poi[2]:.2f}]"
            lines.append(f"| {algo} | {row['iqm'][0]:.2f} [{row['iqm'][1]:.2f}, {row['iqm'][2]:.2f}] | {poi_s} |")
        lines.append("")
    return "\n".join(lines)


def summary(results: list[dict]) -> str:
    """One Markdown table: a row per env and budget, a column per algorithm, the IQM of the final scores.

    A cell reads "n/a" where the algorithm has no finished run on the env, and carries its number
    of seeds, e.g. "-120.3 (2 seeds)", where it has fewer than the most any cell has; the best IQM
    of each row is in bold.
    """
    table = _by(results)
    algos = sorted({r["algo"] for r in results})
    full = max((len(runs) for by_algo in table.values() for runs in by_algo.values()), default=0)
    lines = ["| env (steps) | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    for (env, budget), by_algo in table.items():
        values = {a: float(iqm(np.array([r["final_mean"] for r in runs]))) for a, runs in by_algo.items()}
        best = max(values.values())
        cells = []
        for a in algos:
            if a not in values:
                cells.append("n/a")
                continue
            cell = f"{values[a]:.1f}"
            cell = f"**{cell}**" if values[a] == best else cell
            n = len(by_algo[a])
            cells.append(cell if n == full else f"{cell} ({n} seed{'s' if n > 1 else ''})")
        lines.append(f"| {env} ({budget}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def common_seeds(results: list[dict], algos: list[str] | None = None) -> list[int]:
    """The seeds that every algorithm in ``algos`` (default: all) has finished on every env."""
    table = _by(results)
    algos = sorted({r["algo"] for r in results}) if algos is None else algos
    per_cell = [{r["seed"] for r in table[e][a]} for e in table for a in algos]
    return sorted(set.intersection(*per_cell)) if per_cell else []


def aggregate_members(results: list[dict]) -> tuple[list[str], list[int]]:
    """The algorithms and seeds of the aggregate: (algos, seeds), both sorted; ([], []) if none fit.

    A complete grid keeps every algorithm and seed. While a grid is incomplete, the aggregate keeps
    the algorithms with a finished run on every env and the seeds all of them have finished on every
    env; if fewer than 2 such seeds remain (a bootstrap over one seed says nothing), the algorithm
    with the fewest finished runs is left out and the seeds are counted again.
    """
    table = _by(results)
    kept = [a for a in sorted({r["algo"] for r in results}) if all(table[e][a] for e in table)]
    while kept:
        seeds = common_seeds(results, kept)
        if len(seeds) >= 2:
            return kept, seeds
        kept.remove(min(kept, key=lambda a: (sum(len(table[e][a]) for e in table), a)))
    return [], []


def normalized_matrix(results: list[dict]) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """{algo: [seeds, envs]} of normalized final scores over the aggregate's algorithms and seeds.

    The env axis is (env, budget), sorted: an env run at two budgets counts as two tasks.

    Each env's scores are normalized by the lowest and highest final score of all its runs in the
    grid, the left-out algorithms' included: (score - lowest) / (highest - lowest).
    """
    table = _by(results)
    envs = sorted(table)
    algos = sorted({r["algo"] for r in results})
    kept, seeds = aggregate_members(results)
    if not kept:
        return {}, envs
    out = {}
    for algo in kept:
        m = np.empty((len(seeds), len(envs)))
        for j, env in enumerate(envs):
            finals = [r["final_mean"] for a in algos for r in table[env][a]]
            lo, hi = min(finals), max(finals)
            by_seed = {r["seed"]: r["final_mean"] for r in table[env][algo]}
            for i, s in enumerate(seeds):
                m[i, j] = (by_seed[s] - lo) / (hi - lo) if hi > lo else 0.5
        out[algo] = m
    return out, envs


def _flat_iqm(a: np.ndarray, axis: int = 0) -> float:
    """IQM of all entries of a [seeds, envs] matrix (the aggregate statistic)."""
    return float(iqm(a.reshape(-1), axis=0))


def _poi_split(k: int):
    """P(X > Y) on the column-concatenation [X | Y] of two [seeds, envs] matrices (for the bootstrap)."""

    def statistic(a: np.ndarray, axis: int = 0) -> float:
        return probability_of_improvement(a[:, :k], a[:, k:])

    return statistic


def aggregate(results: list[dict], reference: str = "ppo") -> dict[str, dict]:
    """IQM of normalized scores (with CI) per algorithm, and P(better than ``reference``).

    Over the algorithms and seeds of :func:`aggregate_members`; empty when no 2 seeds are shared.
    """
    mats, _ = normalized_matrix(results)
    if not mats:
        return {}
    rows: dict[str, dict] = {}
    for algo, m in mats.items():
        lo, hi = bootstrap_ci(m, _flat_iqm)
        row = {"iqm": (_flat_iqm(m), lo, hi)}
        if reference in mats and algo != reference:
            ref = mats[reference]
            plo, phi = bootstrap_ci(np.concatenate([m, ref], axis=1), _poi_split(m.shape[1]))
            row["poi"] = (probability_of_improvement(m, ref), plo, phi)
        rows[algo] = row
    return rows


def plot_curves(results: list[dict], path: Path) -> None:
    """One panel per env and budget: mean deterministic return per algorithm, 95% t-interval band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _by(results)
    envs = list(table)
    algos = sorted({r["algo"] for r in results})
    colors = {a: f"C{i % 10}" for i, a in enumerate(algos)}  # one color per algorithm in every panel
    ncols = min(len(envs), 4)
    nrows = -(-len(envs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.6 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, env in zip(flat, envs, strict=False):
        for algo, runs in table[env].items():
            n = min(len(r["curve_means"]) for r in runs)
            steps = np.array(runs[0]["curve_steps"][:n])
            curves = np.array([r["curve_means"][:n] for r in runs])
            mean = curves.mean(0)
            ax.plot(steps, mean, color=colors[algo], label=algo)
            if len(runs) > 1:
                half = stats.t.ppf(0.975, len(runs) - 1) * stats.sem(curves, axis=0)
                ax.fill_between(steps, mean - half, mean + half, color=colors[algo], alpha=0.2)
        ax.set_title(env[0] if sum(e == env[0] for e, _ in envs) == 1 else f"{env[0]} ({env[1]} steps)")
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("mean return (deterministic)")
    for ax in flat[len(envs) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[a], label=a) for a in algos]
    (flat[len(envs)] if len(flat) > len(envs) else flat[-1]).legend(
        handles=handles, fontsize=8, loc="center" if len(flat) > len(envs) else "best"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_reports(results: list[dict], out: Path, reference: str = "ppo") -> dict[str, Path]:
    """results.csv, report.md, summary.md (IQM per env and algorithm) and curves.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "md": out / "report.md", "summary": out / "summary.md", "png": out / "curves.png"}
    write_csv(results, paths["csv"])
    paths["md"].write_text(markdown(results, reference) + "\n")
    paths["summary"].write_text(summary(results) + "\n")
    plot_curves(results, paths["png"])
    return paths
