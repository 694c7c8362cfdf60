"""The package, with the repository's `props/` and `dataset/` installed inside it as `recbole_genair/_props` and
`recbole_genair/_dataset` (`recbole_genair.paths` finds them); everything else is in setup.cfg."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DATA = {"recbole_genair._props": "props", "recbole_genair._dataset": "dataset"}


def data_packages(package, folder):
    """`package` and one sub-package per sub-folder of `folder` (setuptools installs package data per package)."""
    return [package] + [f"{package}.{'.'.join(sub.relative_to(ROOT / folder).parts)}"
                        for sub in sorted((ROOT / folder).rglob("*")) if sub.is_dir() and "__pycache__" not in sub.parts]


data = [sub for package, folder in DATA.items() for sub in data_packages(package, folder)]

setup(
    packages=find_packages(include=["recbole_genair", "recbole_genair.*"]) + data,
    package_dir=DATA,
    package_data={package: ["*"] for package in data},
)
