"""Top-k items of a trained model for a history of raw item ids, or its item table for an ANN index.

    python -m recbole_genair.recommend --checkpoint=saved/SASRecGenAIR-....pth --history="242,302,377" --k=10
    python -m recbole_genair.recommend --checkpoint=saved/SASRecGenAIR-....pth --export=exported/

Prints one tab-separated line per recommended item (history number from 0, rank, item id, score), best first;
`--history` may be given several times (a batch). `--export` writes `item_vectors.npy` and
`item_ids.json` (see `recbole_genair.recommender.Recommender.export`); `--export_recbole` a checkpoint that RecBole's own
`load_data_and_model` reads (`Recommender.export_recbole`).
"""
import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path

from recbole_genair.data.files import DatasetFilesError
from recbole_genair.recommender import Recommender


def checkpoint_parser(prog, does):
    """A parser (no abbreviated flags) with the arguments of `Recommender.load` (`load_checkpoint` reads them).

    `does`: what the command does with the checkpoint ("Recommend with", "Serve ... over HTTP").
    """
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description=f"{does} a checkpoint saved by run_recbole_genair.py (it holds what the model needs; one written "
        f"before recbole_genair 0.2 also needs the dataset's files and --trust_checkpoint).",
    )
    parser.add_argument("--checkpoint", required=True, help="the .pth file the run saved")
    parser.add_argument("--data_path", default=None,
                        help="checkpoints before 0.2: where the dataset's files are now, if they moved since training")
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="read a checkpoint written before 0.2, which pickles Python objects: reading such a file "
                             "can run code it contains, so give it only for files from a source you trust")
    parser.add_argument("--verbose", action="store_true", help="show RecBole's and the model's log messages")
    parser.add_argument("--threads", default=None,
                        help="PyTorch threads (default: the machine's cores shared among the package's processes)")
    return parser


def load_checkpoint(args):
    """`Recommender.load` with a `checkpoint_parser`'s arguments; RecBole's log and library warnings only with
    `--verbose`."""
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    with contextlib.nullcontext() if args.verbose else _quiet():
        return Recommender.load(args.checkpoint, data_path=args.data_path, threads=args.threads,
                                trust_checkpoint=args.trust_checkpoint)


@contextlib.contextmanager
def _quiet():
    """No log message below WARNING and no library warning inside."""
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def check_new_output(path, flag, checkpoint, overwrite=False):
    """Refuse (`SystemExit`, before any work) an output file that is the checkpoint read, or one that exists
    unless `overwrite`: a command never writes over a file it was not told it may replace."""
    if not path:
        return
    if Path(path).resolve() == Path(checkpoint).resolve():
        raise SystemExit(f"error: {flag} is the checkpoint read: give a new file, so that the trained model is kept")
    if Path(path).exists() and not overwrite:
        raise SystemExit(f"error: {flag}={path} exists: give a new file, or --overwrite to replace it")


def parse_args(argv):
    parser = checkpoint_parser("python -m recbole_genair.recommend", "Recommend with")
    parser.add_argument("--history", action="append", default=None,
                        help="raw item ids, oldest first, separated by commas; give it again for more histories")
    parser.add_argument("--k", type=int, default=10, help="items per history (default 10)")
    parser.add_argument("--include_seen", action="store_true", help="also recommend the history's own items")
    parser.add_argument("--unknown", choices=("error", "skip"), default="error",
                        help="item ids the model does not know: refuse them (default) or leave them out")
    parser.add_argument("--export", default=None, help="folder for item_vectors.npy and item_ids.json")
    parser.add_argument("--export_recbole", default=None,
                        help="file for the model as a checkpoint of its RecBole backbone, which RecBole's own "
                             "load_data_and_model reads (GenAIR, TF-LLMER, LLMInit and RecBole's models)")
    args = parser.parse_args(argv)
    if args.history is None and args.export is None and args.export_recbole is None:
        parser.error("give --history (items to recommend for), --export (a folder for the item table) or "
                     "--export_recbole (a RecBole checkpoint), or several")
    return args


def main(argv=None):
    """Parse `argv` (default `sys.argv[1:]`), print the recommendations and export the table if asked."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        recommender = load_checkpoint(args)
        results = []
        if args.history is not None:
            histories = [[item.strip() for item in text.split(",") if item.strip()] for text in args.history]
            results = recommender.recommend(histories, k=args.k, exclude_seen=not args.include_seen,
                                            unknown=args.unknown)
        paths = recommender.export(args.export) if args.export else ()
        if args.export_recbole:
            paths = (*paths, recommender.export_recbole(args.export_recbole))
    except (ValueError, DatasetFilesError) as err:  # the package's errors for people: bad input, checkpoint, data
        raise SystemExit(f"error: {err}") from None
    if results:
        print("history\trank\titem_id\tscore")
    for n, result in enumerate(results):
        if result.skipped:
            print(f"history {n}: left out unknown item ids {', '.join(result.skipped)}", file=sys.stderr)
        for rank, (item, score) in enumerate(zip(result.items, result.scores), 1):
            print(f"{n}\t{rank}\t{item}\t{score:.6g}")
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
