"""Build hook: the top-level ``zoo_configs/`` (the only copy in git) goes into the package as
``sb3_natural/zoo_configs/``, so that an installed wheel finds its configs (``sb3_natural.configs``).
Everything else about the package is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sb3_natural", "sb3_natural.*"]), "sb3_natural.zoo_configs"],
    package_dir={"sb3_natural.zoo_configs": "zoo_configs"},
    package_data={"sb3_natural": ["py.typed"], "sb3_natural.zoo_configs": ["*.yml"]},
)
