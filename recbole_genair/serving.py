"""An HTTP service over a `Recommender`: JSON endpoints on FastAPI, started by `python -m recbole_genair.serve`.

    from recbole_genair.recommender import Recommender
    from recbole_genair.serving import create_app

    app = create_app(Recommender.load("saved/SASRecGenAIR-....pth"))  # any ASGI server runs it, e.g. uvicorn

- `POST /recommend` `{"histories": [["242", "302"], ["51"]], "k": 10, "exclude_seen": true, "unknown": "error"}`
  -> `{"recommendations": [{"items": [...], "scores": [...], "skipped": [...]}, ...]}`, one per history, as
  `Recommender.recommend` gives them.
- `POST /items` `{"items": [{"id": "B0NEW", "fields": {"title": "...", "brand": "..."}}]}` -> the items added
  from their text (`Recommender.add_items`), with their archetypes; recommendable at once.
- `GET /health` -> `{"status": "ok"}`; `GET /metadata` -> the model, dataset, catalogue size, checkpoint,
  package version and how many items of a history the model reads.
- `DELETE /items/{id}` removes an item added from its text (`Recommender.remove_items`); trained items stay.
- `GET /metrics`: requests, errors and latency in Prometheus' text format.
- `GET /docs` and `GET /openapi.json`: FastAPI's OpenAPI documentation.

An API key (`api_key`) guards every endpoint but `/health`, or the writes only; `read_only` refuses writes (403).

A body that does not have this shape is answered 422 with FastAPI's list of what is wrong; a request the
model cannot answer as asked (unknown ids, an empty history, k beyond the catalogue) is answered 400 with
the `RecommendError` message. Neither changes the served model.
"""
import hmac
import json
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future
from typing import Dict, List, Literal, Union

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from recbole_genair import __version__
from recbole_genair.recommender import UNKNOWN_IDS, RecommendError

# JSON numbers are accepted as ids (datasets with numeric item tokens); booleans and floats are not ids.
ItemId = Union[StrictStr, StrictInt]


class RecommendRequest(BaseModel):
    """The body of `POST /recommend`: the arguments of `Recommender.recommend`."""

    model_config = ConfigDict(extra="forbid")  # a misspelled field ("exlude_seen") is refused, not ignored

    histories: List[List[ItemId]] = Field(
        description="a batch of histories, each a list of raw item ids (the dataset's item_id tokens), oldest first",
        examples=[[["242", "302", "377"], ["51"]]])
    k: StrictInt = Field(10, description="items per history, at most the catalogue size")
    exclude_seen: StrictBool = Field(True, description="leave the history's own items out")
    unknown: Literal[UNKNOWN_IDS] = Field(
        "error", description="ids not in the catalogue: 'error' refuses the request and lists them, "
                             "'skip' leaves them out and lists them in `skipped`")


class Recommended(BaseModel):
    items: List[str] = Field(description="raw item ids, best first")
    scores: List[float] = Field(description="the model's score of each item")
    skipped: List[str] = Field(description="unknown ids left out of the history (unknown='skip')")


class RecommendResponse(BaseModel):
    recommendations: List[Recommended] = Field(description="one per history, in the order of the request")


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ItemId = Field(description="the new item's raw id (not in the catalogue yet)")
    fields: Dict[str, Union[StrictStr, StrictInt, float, None]] = Field(
        description="its metadata, by the dataset's .item field names (e.g. title, brand, categories)",
        examples=[{"title": "Recycled paper ream", "brand": "Lumo"}])


class AddItemsRequest(BaseModel):
    """The body of `POST /items`: new items with their metadata."""

    model_config = ConfigDict(extra="forbid")

    items: List[NewItem] = Field(description="the items to add, each with its id and metadata")


class AddedItem(BaseModel):
    id: str
    archetype: str = Field(description="the archetype the LLM wrote for it (GenAIR eq. 5)")


class AddItemsResponse(BaseModel):
    added: List[AddedItem]
    n_items: int = Field(description="items in the catalogue now")
    checkpoint: Union[str, None] = Field(description="where the extended model was saved (--added_checkpoint), if set")


class Health(BaseModel):
    status: Literal["ok"]


class Metadata(BaseModel):
    model: str = Field(description="the model class, e.g. SASRecGenAIR")
    dataset: Union[str, None] = Field(description="the dataset it was trained on")
    n_items: int = Field(description="items in the catalogue: the largest k")
    max_history: int = Field(description="how many of a history's most recent items the model reads")
    checkpoint: Union[str, None] = Field(description="the checkpoint file served")
    version: str = Field(description="recbole_genair version of this service")


class RemoveItemResponse(BaseModel):
    removed: str = Field(description="the id of the item removed")
    n_items: int = Field(description="items in the catalogue now")
    checkpoint: Union[str, None] = Field(description="where the model was saved (--added_checkpoint), if anywhere")


WRITES = "writes"
API_KEY_SCOPES = ("all", WRITES)


def is_write(method, path):
    """Whether a request changes the served catalogue (POST /items, DELETE /items/{id})."""
    return path == "/items" and method == "POST" or path.startswith("/items/") and method == "DELETE"


class ApiKey:
    """ASGI middleware: requests without `Authorization: Bearer <key>` are refused (401), on every endpoint but
    `/health` (scope `all`) or on the writes only (`writes`). Keys are compared in constant time."""

    def __init__(self, app, key, scope=API_KEY_SCOPES[0]):
        self.app, self.key, self.writes_only = app, key.encode(), scope == WRITES

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health" and (
                not self.writes_only or is_write(scope["method"], scope["path"])):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:].strip(), self.key)):
                return await _refuse(send, 401, "this service needs its API key: send the header "
                                                "'Authorization: Bearer <key>'", [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class Metrics:
    """ASGI middleware counting every request for `GET /metrics` (Prometheus' text format): requests and errors by
    endpoint, method and status, and a latency histogram by endpoint. Endpoints are the service's routes (an
    item's id is not a label), anything else counts as `other`."""

    ROUTES = ("/recommend", "/items", "/health", "/metadata", "/metrics", "/docs", "/openapi.json")

    def __init__(self, app, registry):
        from prometheus_client import Counter, Histogram

        self.app = app
        self.requests = Counter("recbole_genair_requests", "HTTP requests answered", ("endpoint", "method", "status"),
                                registry=registry)
        self.errors = Counter("recbole_genair_errors", "HTTP requests answered with a status of 400 or more",
                              ("endpoint", "method", "status"), registry=registry)
        self.latency = Histogram("recbole_genair_request_seconds", "Time to answer a request", ("endpoint",),
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                 registry=registry)

    def endpoint(self, path):
        return path if path in self.ROUTES else "/items/{id}" if path.startswith("/items/") else "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = self.endpoint(scope["path"])
            labels = (endpoint, scope["method"], str(status[0]))
            self.requests.labels(*labels).inc()
            if status[0] >= 400:
                self.errors.labels(*labels).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - start)


class MicroBatcher:
    """Concurrent one-history requests answered by one forward pass: each waits in a queue; one thread takes
    every request queued (up to `max_batch`, after waiting up to `max_wait_s` for more; 0: only those already
    there, so a lone request never waits) and asks the model once per (k, exclude_seen, unknown) group.

    Each request gets what `Recommender.recommend` gives it alone (rows are scored independently; scores equal up
    to float rounding, the batch's matrix product summing in another order); a group whose
    joint call is refused (one request's unknown id, say) is answered request by request, each with its own error.
    """

    def __init__(self, recommender, max_batch=256, max_wait_s=0.0):
        self.recommender, self.max_batch, self.max_wait_s = recommender, int(max_batch), float(max_wait_s)
        self.queue = queue.SimpleQueue()
        self.batch_sizes = []  # requests per forward pass, for the benchmark and the tests
        threading.Thread(target=self._serve, name="micro-batcher", daemon=True).start()

    def recommend(self, history, k, exclude_seen, unknown):
        """The `Recommendation` of one history, computed with the other requests queued meanwhile."""
        done = Future()
        self.queue.put((history, (k, exclude_seen, unknown), done))
        return done.result()

    def _serve(self):
        while True:
            batch = [self.queue.get()]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    left = deadline - time.perf_counter()
                    batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
                except queue.Empty:
                    break
            self.batch_sizes.append(len(batch))
            groups = {}
            for request in batch:
                groups.setdefault(request[1], []).append(request)
            for (k, exclude_seen, unknown), requests in groups.items():
                self._answer(requests, k, exclude_seen, unknown)

    def _answer(self, requests, k, exclude_seen, unknown):
        try:
            results = self.recommender.recommend([h for h, _, _ in requests], k=k, exclude_seen=exclude_seen,
                                                 unknown=unknown)
        except Exception:  # noqa: BLE001 - one request's error is answered to that request alone
            if len(requests) == 1:
                requests[0][2].set_exception(sys.exc_info()[1])
                return
            for request in requests:
                self._answer([request], k, exclude_seen, unknown)
            return
        for (_, _, done), result in zip(requests, results):
            done.set_result(result)


class BodyLimit:
    """ASGI middleware: a request body above `max_bytes` is refused (413) from its Content-Length before any of it is
    read, and a POST without a Content-Length (a chunked body of unknown size) is refused (411), so memory stays
    bounded whatever a client sends."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            length = dict(scope["headers"]).get(b"content-length")
            if length is None:
                return await _refuse(send, 411, "send the body with a Content-Length header")
            if not length.isdigit() or int(length) > self.max_bytes:
                return await _refuse(send, 413, f"the body is larger than this service takes ({self.max_bytes} bytes, "
                                                f"--max_body_bytes): send fewer histories per request")
        return await self.app(scope, receive, send)


async def _refuse(send, status, detail, headers=()):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


def create_app(recommender, embedder=None, added_checkpoint=None, no_embedder_reason=None, max_body_bytes=1_000_000,
               max_histories=1024, api_key=None, api_key_scope="all", read_only=False, micro_batching=True,
               micro_batch_wait_ms=0.0):
    """A FastAPI app that serves `recommender` (a `recbole_genair.recommender.Recommender`).

    `embedder`: an `ItemEmbedder` of the `.itememb` the model was trained on, for `POST /items` (None: items
    cannot be added and the endpoint answers 503; `no_embedder_reason`, which may name the server's files, goes to
    the server's log only). `added_checkpoint`: after each addition the extended model is saved there, so that a
    restart on it loses nothing. `max_body_bytes`: larger bodies are refused (413) before they are read;
    `max_histories`: more histories in one request are refused (413). A history longer than the model reads is
    trimmed to its most recent `max_history` items, as `Recommender.recommend` does. `api_key`: requests must
    send it as `Authorization: Bearer <key>` (401 otherwise), on every endpoint but `/health`
    (`api_key_scope="all"`) or on POST /items and DELETE /items/{id} only (`"writes"`). `read_only`: the
    catalogue cannot be changed (403). `micro_batching`: concurrent one-history requests share a forward pass
    (`MicroBatcher`, waiting up to `micro_batch_wait_ms` for more; 0: no added wait).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if api_key_scope not in API_KEY_SCOPES:
        raise ValueError(f"api_key_scope must be one of {', '.join(API_KEY_SCOPES)}, not {api_key_scope!r}")
    if api_key is not None and not str(api_key).strip():
        raise ValueError("the API key is empty: give a key of at least one character, or none")
    if micro_batch_wait_ms < 0:
        raise ValueError(f"micro_batch_wait_ms must be 0 or more, not {micro_batch_wait_ms}")
    registry = CollectorRegistry()
    batcher = MicroBatcher(recommender, max_wait_s=micro_batch_wait_ms / 1000) if micro_batching else None
    adding = threading.Lock()  # additions one at a time; recommendations go on meanwhile (snapshots)
    if embedder is None and no_embedder_reason:
        logging.getLogger(__name__).warning(f"POST /items is unavailable: {no_embedder_reason}")
    app = FastAPI(
        title="recbole-genair",
        version=__version__,
        description=f"Top-k items for histories of raw item ids: {recommender!r}.",
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if api_key is not None:
        app.add_middleware(ApiKey, key=str(api_key).strip(), scope=api_key_scope)
    app.add_middleware(Metrics, registry=registry)  # the outermost: it counts the refusals of the others too

    def writable():
        if read_only:
            raise HTTPException(status_code=403, detail="this service is read-only (--read_only): its catalogue "
                                                        "cannot be changed")

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics():
        """Prometheus' text format: requests, errors and latency by endpoint."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", response_model=Health)
    def health():
        return {"status": "ok"}

    @app.get("/metadata", response_model=Metadata)
    def metadata():
        config = recommender.config
        return {
            "model": type(recommender.model).__name__,
            "dataset": config["dataset"] if config is not None else None,
            "n_items": len(recommender.item_ids),
            "max_history": recommender.max_history,
            "checkpoint": recommender.checkpoint,
            "version": __version__,
        }

    # A plain `def`: FastAPI runs it in its thread pool, so a slow batch does not block /health.
    @app.post("/recommend", response_model=RecommendResponse,
              responses={400: {"description": "a request the model cannot answer as asked (the message says why)"}})
    def recommend(request: RecommendRequest):
        if len(request.histories) > max_histories:
            raise HTTPException(status_code=413, detail=f"{len(request.histories)} histories in one request; this "
                                                        f"service takes at most {max_histories} (--max_histories)")
        try:
            if batcher is not None and len(request.histories) == 1:
                results = [batcher.recommend(request.histories[0], request.k, request.exclude_seen, request.unknown)]
            else:
                results = recommender.recommend(request.histories, k=request.k, exclude_seen=request.exclude_seen,
                                                unknown=request.unknown)
        except RecommendError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None
        return {"recommendations": [
            {"items": list(r.items), "scores": list(r.scores), "skipped": list(r.skipped)} for r in results
        ]}

    @app.post("/items", response_model=AddItemsResponse,
              responses={400: {"description": "items that cannot be added as asked (the message says why)"},
                         503: {"description": "this service cannot add items (its model or its start-up settings)"}})
    def add_items(request: AddItemsRequest):
        writable()
        try:
            recommender.check_can_add_items()
        except RecommendError as err:  # the model has no text path: a property of the service, not of the request
            raise HTTPException(status_code=503, detail=str(err)) from None
        if embedder is None:  # the reason (with the server's file paths) is in the server's log, not in the answer
            raise HTTPException(status_code=503, detail=(
                "adding items is unavailable on this service: it was started without the archetype run that made "
                "the model's vectors (its .itememb with the stored PCA basis); the server's log says what is missing, "
                "and the operator restarts it with --itememb"))
        try:
            rows = {str(item.id): item.fields for item in request.items}
            with adding:
                recommender.check_new_ids([item.id for item in request.items])  # before the LLM runs
                new_items = embedder.embed(rows, where="POST /items")
                recommender.add_items(new_items)
                saved = str(recommender.save(added_checkpoint)) if added_checkpoint else None
        except ValueError as err:  # RecommendError, NewItemsError: the request cannot be done as asked
            raise HTTPException(status_code=400, detail=str(err)) from None
        return {"added": [{"id": i, "archetype": t} for i, t in zip(new_items.ids, new_items.archetypes)],
                "n_items": len(recommender.item_ids), "checkpoint": saved}

    @app.delete("/items/{item_id}", response_model=RemoveItemResponse,
                responses={403: {"description": "the service is read-only"},
                           404: {"description": "no item with this id"},
                           409: {"description": "a trained item, which cannot be removed"}})
    def remove_item(item_id: str):
        writable()
        try:
            with adding:
                recommender.remove_items([item_id])
                saved = str(recommender.save(added_checkpoint)) if added_checkpoint else None
        except RecommendError as err:
            raise HTTPException(status_code=err.status, detail=str(err)) from None
        return {"removed": item_id, "n_items": len(recommender.item_ids), "checkpoint": saved}

    return app
