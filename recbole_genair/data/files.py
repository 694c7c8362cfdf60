"""Where a dataset's files are, and a clear error when they are not there."""
from pathlib import Path


class DatasetFilesError(FileNotFoundError):
    """The interaction file(s) of a dataset are not where the settings point."""


def check_dataset_files(config):
    """The `.inter` file(s) RecBole will read exist; otherwise say what the folder holds and how to fix it."""
    folder, name = Path(config["data_path"]), config["dataset"]
    parts = config["benchmark_filename"] if "benchmark_filename" in config else None
    wanted = [folder / f"{name}.{part}.inter" for part in parts] if parts else [folder / f"{name}.inter"]
    missing = [path for path in wanted if not path.is_file()]
    if not missing:
        return
    convention = (f"data_path is the folder that holds the folder {name}/ (RecBole's convention) or the "
                  f"dataset folder itself")
    if not folder.is_dir():
        raise DatasetFilesError(f"dataset {name!r}: the folder {folder} does not exist. {convention}; check "
                                f"--data_path and --dataset.")
    present = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(present[:8]) + (", ..." if len(present) > 8 else "") if present else "nothing"
    raise DatasetFilesError(f"dataset {name!r}: {folder} has no {missing[0].name} (it holds {shown}). {convention}; "
                            f"the files are named <dataset>.inter, <dataset>.item, ... after --dataset.")
