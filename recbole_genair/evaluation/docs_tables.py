"""Tables in the documentation, generated from the run records in `results/`, never copied by hand.

A generated block in a markdown file is

    <!-- generated: report results/defaults-ml-100k seeds=3 models=SASRec,SASRecGenAIR -->
    ... (written by `update_tables`) ...
    <!-- end generated -->

`report` writes the comparison report's table (`table.md` of `--compare`: test metrics and training) of the
models that have a run record of every seed in that folder's `runs/` (the others are left out until they do),
in the order given. Paths are relative to the repository root.
"""
import re
from pathlib import Path

from recbole_genair.evaluation.compare import parse_seeds, report_table
from recbole_genair.evaluation.run_records import load_runs

BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


class TableSpecError(ValueError):
    """A generated block whose specification cannot be read, or whose runs are missing."""


def generate(spec, root):
    """The markdown a block's `spec` ("report <folder> seeds=N models=A,B") stands for."""
    kind, folder, *options = spec.split()
    options = dict(option.split("=", 1) for option in options)
    if kind != "report" or not {"seeds", "models"} <= set(options):
        raise TableSpecError(f"<!-- generated: {spec} -->: write 'report <results folder> seeds=<n or list> "
                             f"models=<A,B,...>'")
    output, seeds = Path(root) / folder, parse_seeds(options["seeds"])
    runs = load_runs(output, options["models"].split(","), seeds)
    models = [m for m in options["models"].split(",") if all((m, s) in runs for s in seeds)]  # every seed finished
    if not models:
        raise TableSpecError(f"<!-- generated: {spec} -->: no model has a run record of every seed in {output / 'runs'}")
    return report_table({key: run for key, run in runs.items() if key[0] in models}, models, seeds)


def update_tables(files, root=".", check=False):
    """Regenerate every block of `files`; with `check`, write nothing. Returns the (file, spec) that differed."""
    stale = []
    for path in files:
        text = Path(path).read_text(encoding="utf-8")

        def replace(match):
            body = generate(match["spec"], root) + "\n"
            if body != match["body"]:
                stale.append((str(path), match["spec"]))
            return match.group(1) + body + match.group(4)

        new = BLOCK.sub(replace, text)
        if new != text and not check:
            Path(path).write_text(new, encoding="utf-8")
    return stale


def site_index(readme_text):
    """The docs site's front page: the README with its links into `docs/` made relative to that folder."""
    return ("<!-- written by `python -m recbole_genair.tables` from README.md: edit README.md -->\n"
            + readme_text.replace("](docs/", "]("))
