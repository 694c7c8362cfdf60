"""The package outside the repository (issue 33): the wheel ships props/ and dataset/, found when installed."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from recbole_genair.paths import PROPS_DIR, shipped_props_file

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_file_of_props_and_dataset(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("recbole_genair-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, inside in (("props", "_props"), ("dataset", "_dataset")):
        files = [p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files
        missing = [str(p) for p in files if f"recbole_genair/{inside}/{p.relative_to(ROOT / folder).as_posix()}" not in names]
        assert not missing, missing
    assert "recbole_genair/commands/console.py" in names


def test_readme_config_files_resolve_outside_the_repository(tmp_path):
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert Path(shipped_props_file("props/variants/paper.yaml")) == PROPS_DIR / "variants" / "paper.yaml"
        assert shipped_props_file("props/none.yaml") == "props/none.yaml"  # unknown: left for the error that names it
        (tmp_path / "props").mkdir()
        (tmp_path / "props" / "mine.yaml").write_text("epochs: 1\n")
        assert shipped_props_file("props/mine.yaml") == "props/mine.yaml"  # a file of the user's own comes first
    finally:
        os.chdir(here)
