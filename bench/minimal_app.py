"""The reference for predict throughput: the least FastAPI app that serves the same model.

What a person would write in ten minutes: load a joblib file at startup, one `POST
/predict` route that calls ``predict_proba``. No store, no ids, no signatures, no
metrics, no problem+json. The gap between this and the service's predict route is
the price of those features per request.

Served by ``uvicorn bench.minimal_app:app``; ``BENCH_MODEL_PATH`` names the joblib file.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import joblib
import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel

MODEL_PATH_ENV = "BENCH_MODEL_PATH"


class Points(BaseModel):
    points: list[list[float]]


class Probabilities(BaseModel):
    probabilities: list[list[float]]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Loaded once, like the service's warm LRU cache: the bench measures requests, not loads.
    app.state.estimator = joblib.load(os.environ[MODEL_PATH_ENV])
    yield


app = FastAPI(title="minimal predict", lifespan=lifespan)


@app.post("/predict")
def predict(body: Points, request: Request) -> Probabilities:
    """A plain ``def`` route, as the service's is: sklearn runs in the threadpool."""
    proba = request.app.state.estimator.predict_proba(np.asarray(body.points, dtype=np.float64))
    return Probabilities(probabilities=proba.tolist())
