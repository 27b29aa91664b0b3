"""docs/metrics.md documents exactly the keys that the classes of the model list log."""

from __future__ import annotations

import re
from pathlib import Path

from model_list import MODEL_LIST
from stable_baselines3.common.logger import configure

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
# Keys written only on a rare path (a skipped step), which a short smoke run need not reach.
CONDITIONAL = {"train/skip_reason", "train/line_search_skip_reason"}


def glossary_keys() -> dict[str, set[str]]:
    """``{key: classes}`` from the first two columns of the glossary's tables."""
    keys: dict[str, set[str]] = {}
    for line in GLOSSARY.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`train/"):
            continue
        classes = {c.strip() for c in cells[1].split(",")}
        for key in re.findall(r"`(train/[a-z_0-9]+)`", cells[0]):
            keys[key] = classes
    return keys


def logged_keys() -> dict[str, set[str]]:
    logged: dict[str, set[str]] = {}
    for case in MODEL_LIST:
        model = case.build()
        model.set_logger(configure(None, []))  # a custom logger: learn() keeps it
        seen: set[str] = set()
        record = model.logger.record

        def spy(key, value, exclude=None, _seen=seen, _record=record):
            _seen.add(key)
            _record(key, value, exclude)

        model.logger.record = spy
        model.learn(case.steps)
        for key in seen:
            if key.startswith("train/"):
                logged.setdefault(key, set()).add(case.cls.__name__)
    return logged


def test_glossary_matches_what_the_classes_log():
    documented, logged = glossary_keys(), logged_keys()
    assert len(documented) > 20
    missing = sorted(set(logged) - set(documented))
    assert not missing, f"logged but not in docs/metrics.md: {missing}"
    unused = sorted(set(documented) - set(logged) - CONDITIONAL)
    assert not unused, f"in docs/metrics.md but logged by no class of the model list: {unused}"
    for key, classes in logged.items():
        if documented[key] != {"all"}:
            assert classes <= documented[key], f"{key}: logged by {sorted(classes)}, documented for {sorted(documented[key])}"
