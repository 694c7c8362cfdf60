"""Regenerate the documentation's result tables from the run records (`recbole_genair.evaluation.docs_tables`).

    python -m recbole_genair.tables            # rewrite README.md and docs/*.md in place (docs/index.md: the README)
    python -m recbole_genair.tables --check    # exit 1 naming the tables that differ; write nothing
"""
import argparse
import sys
from pathlib import Path

from recbole_genair.evaluation.docs_tables import site_index, update_tables


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_genair.tables", allow_abbrev=False,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="markdown files (default: README.md and docs/*.md)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table differs")
    parser.add_argument("--root", default=".", help="the repository root, for the results folders (default .)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(args.root)
    files = args.files or [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    stale = update_tables(files, root, check=args.check)
    readme, index = root / "README.md", root / "docs" / "index.md"
    if readme.is_file() and index.parent.is_dir():  # the site's front page is the README
        text = site_index(readme.read_text(encoding="utf-8"))
        if not index.is_file() or index.read_text(encoding="utf-8") != text:
            stale.append((str(index), "README.md"))
            if not args.check:
                index.write_text(text, encoding="utf-8")
    for path, spec in stale:
        print(f"{path}: the table '{spec}' {'differs from' if args.check else 'was rewritten from'} its run records",
              file=sys.stderr)
    if args.check and stale:
        raise SystemExit(f"error: {len(stale)} tables differ from the run records: run `python -m recbole_genair.tables`")
    return stale


if __name__ == "__main__":
    main()
