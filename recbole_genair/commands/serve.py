"""Serve a trained model over HTTP: FastAPI + uvicorn on `recbole_genair.serving.create_app`.

    python -m recbole_genair.serve --checkpoint=saved/SASRecGenAIR-....pth --host=127.0.0.1 --port=8000

Loads the checkpoint once (as `Recommender.load`), then answers `POST /recommend`, `GET /health`,
`GET /metadata` and the OpenAPI docs at `/docs` until stopped (Ctrl-C or SIGTERM). Needs the `serve`
extra: `pip install "recbole-genair[serve]"`.
"""
import sys

from recbole_genair.commands.recommend import checkpoint_parser
from recbole_genair.data.files import DatasetFilesError
from recbole_genair.recommender import Recommender


def parse_args(argv):
    parser = checkpoint_parser("python -m recbole_genair.serve", "Serve, over HTTP,")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--log_level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default info)")
    return parser.parse_args(argv)


def main(argv=None):
    """Parse `argv` (default `sys.argv[1:]`), load the checkpoint, and serve it until stopped."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvicorn

        from recbole_genair.serving import create_app
    except ImportError as err:
        raise SystemExit(f"error: serving needs FastAPI and uvicorn ({err}): "
                         f"pip install \"recbole-genair[serve]\"") from None
    try:
        recommender = Recommender.load(args.checkpoint, data_path=args.data_path)
    except (ValueError, DatasetFilesError) as err:  # the package's errors for people: checkpoint, data
        raise SystemExit(f"error: {err}") from None
    print(f"serving {recommender!r} on http://{args.host}:{args.port} (docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(recommender), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
