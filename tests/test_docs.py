"""The documentation (issue 36): tables generated from the run records, the site's front page, and every command
shown in README.md and docs/ parses with the flags and settings the package knows."""
import re
import shlex
from pathlib import Path

import pytest

from recbole_genair.commands import add_items, recommend, serve, tables, train
from recbole_genair.config_keys import known_config_keys
from recbole_genair.evaluation.docs_tables import TableSpecError, generate, update_tables

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*python (run_recbole_genair\.py|-m recbole_genair\.(\w+)) ?(.*)$")


def test_every_generated_table_is_what_its_run_records_give():
    assert update_tables(PAGES, ROOT, check=True) == []
    tables.main(["--check", "--root", str(ROOT)])  # the site's front page is the README too


def test_a_table_that_differs_from_its_records_is_found_and_rewritten(tmp_path):
    page = tmp_path / "page.md"
    spec = "report results/defaults-ml-100k seeds=3 models=SASRec,SASRecGenAIR"
    page.write_text(f"intro\n<!-- generated: {spec} -->\nhand-copied numbers\n<!-- end generated -->\nafter\n")
    assert update_tables([page], ROOT, check=True) == [(str(page), spec)]
    assert "hand-copied" in page.read_text()  # --check writes nothing
    update_tables([page], ROOT)
    assert page.read_text() == f"intro\n<!-- generated: {spec} -->\n{generate(spec, ROOT)}\n<!-- end generated -->\nafter\n"
    with pytest.raises(TableSpecError, match="no model has a run record of every seed"):
        generate("report results/defaults-ml-100k seeds=3 models=NoSuchModel", ROOT)


def commands():
    """(page, command line) for every package command in a bash block of the pages, continuation lines joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            variables = {}  # NAME="..." lines of the block, used as $NAME by the commands after them
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line.strip())  # a comment after the command
                assignment = re.match(r'^([A-Z_]+)="(.*)"$', line)
                if assignment:
                    variables[assignment[1]] = assignment[2]
                    continue
                line = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m[1], m[0]), line)
                if COMMAND.match(line) and not line.startswith("#"):
                    found.append((page.name, line))
    return found


def test_the_pages_show_the_commands():
    pages = {page for page, _ in commands()}
    assert {"README.md", "using.md", "archetypes.md", "comparing.md"} <= pages and len(commands()) > 30


@pytest.mark.parametrize("page, line", commands())
def test_every_command_in_the_pages_parses(page, line, monkeypatch):
    match = COMMAND.match(line)
    argv = [a for a in shlex.split(match.group(3).replace("$HOME", "/home/user")) if a != "..."]
    module = match.group(2)
    if module is None:  # run_recbole_genair.py: its flags, then RecBole / package settings as --key=value
        _, rest = train.parse_args(argv)
        keys = [a[2:].split("=", 1)[0] for a in rest]
        assert all(a.startswith("--") and "=" in a for a in rest), f"{page}: {line}"
        unknown = [k for k in keys if k not in known_config_keys()]
        assert not unknown, f"{page}: {line}: unknown settings {unknown}"
    elif module in ("recommend", "serve", "add_items"):
        {"recommend": recommend, "serve": serve, "add_items": add_items}[module].parse_args(argv)
    elif module == "archetype":
        from recbole_genair.archetype.settings import _known_keys

        keys = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--")]
        assert not [k for k in keys if k not in {*_known_keys(), "dataset", "config_files"}], f"{page}: {line}"
    elif module == "tables":
        tables.main([*argv, "--check", "--root", str(ROOT)]) if "--check" not in argv else None
    else:
        pytest.fail(f"{page}: {line}: python -m recbole_genair.{module} is not a command of the package")
