"""Where the package's own files are: its `props/` (YAML defaults) and `dataset/` (shipped datasets) folders.

In a checkout (or an editable install) they are the repository's top-level folders. A wheel installs copies
inside the package (`recbole_genair/_props`, `recbole_genair/_dataset`, mapped in `setup.py`), used when present.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = PACKAGE_DIR.parent
_INSTALLED = (PACKAGE_DIR / "_props" / "overall.yaml").is_file()
PROPS_DIR = PACKAGE_DIR / "_props" if _INSTALLED else PACKAGE_ROOT / "props"
DATASET_DIR = PACKAGE_DIR / "_dataset" if _INSTALLED else PACKAGE_ROOT / "dataset"


def shipped_props_file(file):
    """`file` as given when it exists; else, for a path like `props/variants/paper.yaml`, the shipped copy (so
    the README's `--config_files=props/...` works outside the repository); else `file` unchanged."""
    path = Path(file)
    if path.exists() or not path.parts or path.parts[0] != "props":
        return file
    shipped = PROPS_DIR.joinpath(*path.parts[1:])
    return str(shipped) if shipped.is_file() else file
