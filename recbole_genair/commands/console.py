"""The console scripts (setup.cfg): each runs a command's `main` and exits with 0 when it succeeds.

Each `main` returns its result to Python callers; a console script must not hand that on as its exit status
(`sys.exit` of a list or a path prints it and exits with 1).
"""


def train():
    """`recbole-genair`: train, compare, tune (`python run_recbole_genair.py`)."""
    from recbole_genair.commands.train import main
    main()


def recommend():
    """`recbole-genair-recommend`."""
    from recbole_genair.commands.recommend import main
    main()


def serve():
    """`recbole-genair-serve`."""
    from recbole_genair.commands.serve import main
    main()


def add_items():
    """`recbole-genair-add-items`."""
    from recbole_genair.commands.add_items import main
    main()


def archetype():
    """`recbole-genair-archetype`."""
    from recbole_genair.archetype.__main__ import main
    main()
