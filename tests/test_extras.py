"""Entry points whose optional dependencies are missing say which and how to install them."""

from __future__ import annotations

import importlib.util

import pytest

from sb3_natural import extras, zoo
from sb3_natural.benchmark.__main__ import main as benchmark_main
from sb3_natural.extras import MissingExtraError, missing_modules, require_extra

ZOO_HINT = 'pip install "sb3-natural[zoo]"'


def test_require_extra_names_the_missing_modules_and_the_pip_command():
    require_extra("zoo", "x", ("json", "yaml"))  # installed: no error
    assert missing_modules(("json", "no_such_module_sb3n")) == ["no_such_module_sb3n"]
    with pytest.raises(MissingExtraError, match=r"the feature needs no_such_module_sb3n, which is not installed") as err:
        require_extra("zoo", "the feature", ("json", "no_such_module_sb3n"))
    assert str(err.value).endswith(ZOO_HINT)
    assert isinstance(err.value, ImportError)
    with pytest.raises(MissingExtraError, match=r"needs no_a_sb3n, no_b_sb3n, which are not installed: .*\[cluster\]"):
        require_extra("cluster", "it", ("no_a_sb3n", "no_b_sb3n"))


@pytest.fixture
def without(monkeypatch):
    """Make the given top-level modules look uninstalled to require_extra."""

    def hide(*names: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))

    return hide


def test_zoo_register_without_rl_zoo3(without):
    without("rl_zoo3")
    with pytest.raises(MissingExtraError, match=r"rl-zoo3 integration .* needs rl_zoo3"):
        zoo.register()


@pytest.mark.parametrize("entry", ["train", "enjoy"])
def test_zoo_cli_without_rl_zoo3_exits_with_the_install_command(entry, without):
    without("rl_zoo3")
    with pytest.raises(SystemExit) as exc:
        zoo.run_zoo(entry, ["--algo", "nac", "--env", "CartPole-v1", "--num-threads", "1"])
    message = str(exc.value.code)
    assert message.startswith("error: ") and "needs rl_zoo3" in message and message.endswith(ZOO_HINT)


@pytest.mark.parametrize(("missing", "flags"), [(("rl_zoo3",), []), (("scipy",), []), (("scipy",), ["--report-only"])])
def test_benchmark_cli_without_the_zoo_extra(missing, flags, without, tmp_path, capsys):
    without(*missing)
    with pytest.raises(SystemExit) as exc:
        benchmark_main(["--suite", "quick", "--out", str(tmp_path), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"needs {missing[0]}" in err and ZOO_HINT in err
    assert not any(tmp_path.iterdir())  # nothing run


def test_benchmark_report_only_does_not_need_rl_zoo3(without, tmp_path):
    without("rl_zoo3")
    assert benchmark_main(["--suite", "quick", "--out", str(tmp_path / "none"), "--report-only"]) == 0


@pytest.mark.parametrize(
    ("missing", "flags"),
    [("distributed", ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"]), ("dask_jobqueue", ["--executor", "slurm"])],
)
def test_benchmark_cluster_executors_without_the_cluster_extra(missing, flags, without, tmp_path, capsys):
    without(missing)
    with pytest.raises(SystemExit) as exc:
        benchmark_main(["--suite", "quick", "--out", str(tmp_path), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--executor {flags[1]} needs {missing}" in err and 'pip install "sb3-natural[cluster]"' in err
    assert not any(tmp_path.iterdir())


def test_executor_imports_name_the_cluster_extra(without):
    from sb3_natural.benchmark import executors

    without("distributed")
    with pytest.raises(MissingExtraError, match=r'executors needs distributed, .*pip install "sb3-natural\[cluster\]"'):
        executors._require("distributed.security")
    assert executors._require("json").dumps([1]) == "[1]"  # an installed module is imported and returned
