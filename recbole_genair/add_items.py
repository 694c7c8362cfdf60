"""`python -m recbole_genair.add_items --checkpoint=... --items=new.item --output=...` (`recbole_genair.commands.add_items`).

An entry point only, like `run_recbole_genair.py`: the Python API is `Recommender.add_items` with
`recbole_genair.archetype.new_items`.
"""
from recbole_genair.commands.add_items import main

if __name__ == "__main__":
    main()
