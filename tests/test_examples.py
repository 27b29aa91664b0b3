"""Every script in examples/ runs and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_per_sample_scores_example():
    out = run_example("per_sample_scores.py")
    err = float(out.split("max |fast - loop| =")[1].split()[0])
    assert err < 1e-5
    cos = float(out.split("cosine with the vanilla gradient =")[1].split()[0])
    assert 0.0 < cos <= 1.0  # the natural gradient is an ascent direction


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_is_tested(name):
    assert name in Path(__file__).read_text(), f"examples/{name} has no test in tests/test_examples.py"
