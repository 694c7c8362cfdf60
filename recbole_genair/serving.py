"""An HTTP service over a `Recommender`: JSON endpoints on FastAPI, started by `python -m recbole_genair.serve`.

    from recbole_genair.recommender import Recommender
    from recbole_genair.serving import create_app

    app = create_app(Recommender.load("saved/SASRecGenAIR-....pth"))  # any ASGI server runs it, e.g. uvicorn

- `POST /recommend` `{"histories": [["242", "302"], ["51"]], "k": 10, "exclude_seen": true, "unknown": "error"}`
  -> `{"recommendations": [{"items": [...], "scores": [...], "skipped": [...]}, ...]}`, one per history, as
  `Recommender.recommend` gives them.
- `GET /health` -> `{"status": "ok"}`; `GET /metadata` -> the model, dataset, catalogue size, checkpoint,
  package version and how many items of a history the model reads.
- `GET /docs` and `GET /openapi.json`: FastAPI's OpenAPI documentation.

A body that does not have this shape is answered 422 with FastAPI's list of what is wrong; a request the
model cannot answer as asked (unknown ids, an empty history, k beyond the catalogue) is answered 400 with
the `RecommendError` message. Neither changes the served model.
"""
from typing import List, Literal, Union

from fastapi import FastAPI, HTTPException
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


class Health(BaseModel):
    status: Literal["ok"]


class Metadata(BaseModel):
    model: str = Field(description="the model class, e.g. SASRecGenAIR")
    dataset: Union[str, None] = Field(description="the dataset it was trained on")
    n_items: int = Field(description="items in the catalogue: the largest k")
    max_history: int = Field(description="how many of a history's most recent items the model reads")
    checkpoint: Union[str, None] = Field(description="the checkpoint file served")
    version: str = Field(description="recbole_genair version of this service")


def create_app(recommender):
    """A FastAPI app that serves `recommender` (a `recbole_genair.recommender.Recommender`)."""
    app = FastAPI(
        title="recbole-genair",
        version=__version__,
        description=f"Top-k items for histories of raw item ids: {recommender!r}.",
    )

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
        try:
            results = recommender.recommend(request.histories, k=request.k, exclude_seen=request.exclude_seen,
                                            unknown=request.unknown)
        except RecommendError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None
        return {"recommendations": [
            {"items": list(r.items), "scores": list(r.scores), "skipped": list(r.skipped)} for r in results
        ]}

    return app
