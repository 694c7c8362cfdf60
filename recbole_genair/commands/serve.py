"""Serve a trained model over HTTP: FastAPI + uvicorn on `recbole_genair.serving.create_app`.

    python -m recbole_genair.serve --checkpoint=saved/SASRecGenAIR-....pth --host=127.0.0.1 --port=8000

Loads the checkpoint once (as `Recommender.load`), then answers `POST /recommend`, `GET /health`,
`POST /items` (items added from their text),
`GET /metadata` and the OpenAPI docs at `/docs` until stopped (Ctrl-C or SIGTERM). Needs the `serve`
extra: `pip install "recbole-genair[serve]"`.
"""
import sys

from recbole_genair.commands.recommend import check_new_output, checkpoint_parser
from recbole_genair.data.files import DatasetFilesError
from recbole_genair.recommender import Recommender


def parse_args(argv):
    parser = checkpoint_parser("python -m recbole_genair.serve", "Serve, over HTTP,")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--log_level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default info)")
    parser.add_argument("--itememb", default=None,
                        help="the .itememb the model was trained on, for POST /items (default: where it was at "
                             "training, if it is there)")
    parser.add_argument("--llm_model", default=None, help="where the archetype run's LLM is now, if it moved")
    parser.add_argument("--added_checkpoint", default=None,
                        help="save the model here after each POST /items (a new file, not the one served)")
    parser.add_argument("--overwrite", action="store_true", help="replace --added_checkpoint if it exists")
    parser.add_argument("--max_body_bytes", type=int, default=1_000_000,
                        help="larger request bodies are refused with 413 before they are read (default 1000000)")
    parser.add_argument("--max_histories", type=int, default=1024,
                        help="more histories in one request are refused with 413 (default 1024)")
    return parser.parse_args(argv)


def item_embedder(recommender, itememb=None, llm_model=None):
    """(`ItemEmbedder` for POST /items, None) or (None, why items cannot be added, also printed on stderr)."""
    from recbole_genair.archetype.new_items import ItemEmbedder
    from recbole_genair.commands.add_items import trained_itememb

    try:
        return ItemEmbedder(trained_itememb(recommender, itememb), llm_model=llm_model), None
    except ValueError as err:
        print(f"POST /items is off: {err}", file=sys.stderr, flush=True)
        return None, str(err)


def main(argv=None):
    """Parse `argv` (default `sys.argv[1:]`), load the checkpoint, and serve it until stopped."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvicorn

        from recbole_genair.serving import create_app
    except ImportError as err:
        raise SystemExit(f"error: serving needs FastAPI and uvicorn ({err}): "
                         f"pip install \"recbole-genair[serve]\"") from None
    check_new_output(args.added_checkpoint, "--added_checkpoint", args.checkpoint, args.overwrite)
    for flag in ("max_body_bytes", "max_histories"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag}={getattr(args, flag)}: give a limit of at least 1")
    try:
        recommender = Recommender.load(args.checkpoint, data_path=args.data_path, threads=args.threads)
    except (ValueError, DatasetFilesError) as err:  # the package's errors for people: checkpoint, data
        raise SystemExit(f"error: {err}") from None
    embedder, why_not = item_embedder(recommender, args.itememb, args.llm_model)
    print(f"serving {recommender!r} on http://{args.host}:{args.port} (docs at /docs)", file=sys.stderr, flush=True)
    app = create_app(recommender, embedder, args.added_checkpoint, why_not, max_body_bytes=args.max_body_bytes,
                     max_histories=args.max_histories)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
