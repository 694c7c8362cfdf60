"""Add items that arrived after training to a trained model, from their text, without retraining.

    python -m recbole_genair.add_items --checkpoint=saved/SASRecGenAIR-....pth --items=new.item \
        --output=saved/SASRecGenAIR-with-new-items.pth

`--items` is an `.item` file (RecBole atomic format, the dataset's fields) with one row per new item. Their
archetypes and vectors are made with the settings, LLM and PCA basis of the `.itememb` the model was trained
on (`--itememb` if it moved; `--llm_model` if the same LLM now lies elsewhere), the trained projector maps them
into the item table, and the extended model is written to `--output` (a new file; `--overwrite` to replace one).
Prints one line per new item: its id and archetype.
"""
import sys
from pathlib import Path

from recbole_genair.archetype.new_items import ItemEmbedder, read_new_items
from recbole_genair.commands.recommend import check_new_output, checkpoint_parser, load_checkpoint
from recbole_genair.data.files import DatasetFilesError
from recbole_genair.data.itememb import itememb_path


def parse_args(argv):
    parser = checkpoint_parser("python -m recbole_genair.add_items", "Add items from their text to")
    parser.add_argument("--items", required=True, help=".item file of the new items (the dataset's fields)")
    parser.add_argument("--output", required=True, help="the new checkpoint to write (not the one read)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--itememb", default=None,
                        help="the .itememb the model was trained on (default: where it was at training)")
    parser.add_argument("--llm_model", default=None,
                        help="where the archetype run's LLM is now, if it moved (the same model)")
    return parser.parse_args(argv)


def trained_itememb(recommender, given=None):
    """The `.itememb` whose archetype run new items must repeat: `given`, else the model's training file."""
    recommender.check_can_add_items()
    return Path(given).expanduser() if given is not None else Path(itememb_path(recommender.config))


def main(argv=None):
    """Parse `argv` (default `sys.argv[1:]`), add the items, write the new checkpoint; returns its path."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_new_output(args.output, "--output", args.checkpoint, args.overwrite)
    try:
        recommender = load_checkpoint(args)
        embedder = ItemEmbedder(trained_itememb(recommender, args.itememb), llm_model=args.llm_model)
        header, rows, path = read_new_items(args.items, embedder.settings["item_id_field"])
        new_items = embedder.embed(rows, header=header, where=str(path))
        recommender.add_items(new_items)
        saved = recommender.save(args.output)
    except (ValueError, DatasetFilesError) as err:  # the package's errors for people: input, checkpoint, data
        raise SystemExit(f"error: {err}") from None
    print("item_id\tarchetype")
    for item, text in zip(new_items.ids, new_items.archetypes):
        print(f"{item}\t{text}")
    print(f"added {len(new_items.ids)} items ({len(recommender.item_ids)} in the catalogue); wrote {saved}",
          file=sys.stderr)
    return saved


if __name__ == "__main__":
    main()
