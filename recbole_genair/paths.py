"""Where the package's own files are: the repository root and its `props/` and `dataset/` folders."""
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PROPS_DIR = PACKAGE_ROOT / "props"
DATASET_DIR = PACKAGE_ROOT / "dataset"
