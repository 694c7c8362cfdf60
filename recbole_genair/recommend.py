"""`python -m recbole_genair.recommend --checkpoint=... --history="id1,id2,..." --k=10` (`recbole_genair.commands.recommend`).

An entry point only, like `run_recbole_genair.py`: the Python API is `recbole_genair.recommender.Recommender`.
"""
from recbole_genair.commands.recommend import main

if __name__ == "__main__":
    main()
