"""Serve a trained model over HTTP: FastAPI + uvicorn on `recbole_genair.serving.create_app`.

    python -m recbole_genair.serve --checkpoint=saved/SASRecGenAIR-....pth --host=127.0.0.1 --port=8000

Loads the checkpoint once (as `Recommender.load`), then answers `POST /recommend`, `GET /health`,
`POST /items` (items added from their text),
`DELETE /items/{id}`, `GET /metrics`, `GET /metadata` and the OpenAPI docs at `/docs` until stopped (Ctrl-C or
SIGTERM). An API key from the environment (`RECBOLE_GENAIR_API_KEY`) or `--api_key_file` guards it; `--read_only`
keeps the catalogue as loaded. Needs the `serve` extra: `pip install "recbole-genair[serve]"`.
"""
import os
import sys

from recbole_genair.commands.recommend import check_new_output, checkpoint_parser, load_checkpoint
from recbole_genair.data.files import DatasetFilesError

API_KEY_ENV = "RECBOLE_GENAIR_API_KEY"
API_KEY_SCOPES = ("all", "writes")  # recbole_genair.serving's, without importing FastAPI before it is checked


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
    parser.add_argument("--api_key_env", default=API_KEY_ENV,
                        help=f"environment variable holding the API key (default {API_KEY_ENV}); when it is set, "
                             f"requests must send 'Authorization: Bearer <key>'")
    parser.add_argument("--api_key_file", default=None,
                        help="file holding the API key instead (its first line); the key itself is never a flag, "
                             "so that it stays out of the process list and the shell history")
    parser.add_argument("--api_key_scope", choices=API_KEY_SCOPES, default="all",
                        help="all: every endpoint but /health needs the key (default); writes: POST /items and "
                             "DELETE /items/{id} only")
    parser.add_argument("--no_micro_batching", action="store_true",
                        help="answer each one-history request with its own forward pass (default: concurrent ones "
                             "share one)")
    parser.add_argument("--micro_batch_wait_ms", type=float, default=0.0,
                        help="how long a one-history request waits for others to share its forward pass (default 0: "
                             "only requests already waiting are joined, a lone request never waits)")
    parser.add_argument("--read_only", action="store_true",
                        help="refuse POST /items and DELETE /items/{id} (403): the catalogue stays as loaded")
    return parser.parse_args(argv)


def api_key(args):
    """The API key from `--api_key_file` or the `--api_key_env` variable, or None; `SystemExit` for an unusable one."""
    if args.api_key_file:
        try:
            lines = open(args.api_key_file, encoding="utf-8").read().splitlines()
        except OSError as err:
            raise SystemExit(f"error: --api_key_file={args.api_key_file}: {err.strerror}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise SystemExit(f"error: --api_key_file={args.api_key_file} is empty: write the key on its first line")
        return key
    key = os.environ.get(args.api_key_env)
    if key is not None and not key.strip():
        raise SystemExit(f"error: the environment variable {args.api_key_env} is empty: set it to the key, or unset it")
    return key.strip() if key else None


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
    if args.micro_batch_wait_ms < 0:
        raise SystemExit(f"error: --micro_batch_wait_ms={args.micro_batch_wait_ms}: give 0 or more milliseconds")
    for flag in ("max_body_bytes", "max_histories"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag}={getattr(args, flag)}: give a limit of at least 1")
    key = api_key(args)
    if key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without an API key: anyone who reaches the port can use it"
              f"{'' if args.read_only else ' and change its catalogue'}; set {args.api_key_env} or --api_key_file",
              file=sys.stderr, flush=True)
    try:
        recommender = load_checkpoint(args)
    except (ValueError, DatasetFilesError) as err:  # the package's errors for people: checkpoint, data
        raise SystemExit(f"error: {err}") from None
    embedder, why_not = (None, "the service is read-only") if args.read_only else item_embedder(
        recommender, args.itememb, args.llm_model)
    print(f"serving {recommender!r} on http://{args.host}:{args.port} (docs at /docs)", file=sys.stderr, flush=True)
    app = create_app(recommender, embedder, args.added_checkpoint, why_not, max_body_bytes=args.max_body_bytes,
                     max_histories=args.max_histories, api_key=key, api_key_scope=args.api_key_scope,
                     read_only=args.read_only, micro_batching=not args.no_micro_batching,
                     micro_batch_wait_ms=args.micro_batch_wait_ms)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
