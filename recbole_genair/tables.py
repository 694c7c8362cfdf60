"""`python -m recbole_genair.tables [--check]` (`recbole_genair.commands.tables`): the docs' result tables."""
from recbole_genair.commands.tables import main

if __name__ == "__main__":
    main()
