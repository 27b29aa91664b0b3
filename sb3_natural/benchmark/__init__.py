"""Side-by-side benchmark harness: sb3_natural's algorithms and SB3's built-ins through the zoo CLI."""

from sb3_natural.benchmark.runner import Run, grid, run_grid
from sb3_natural.benchmark.suites import SUITES

__all__ = ["SUITES", "Run", "grid", "run_grid"]
