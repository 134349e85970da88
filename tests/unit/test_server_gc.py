"""A Tandem app keeps what its start-up made (modules, the app, what its lifespan loaded) out of the garbage
collector's full collections: once the lifespan has run, those objects are frozen."""

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tandem.server import make_base_app
from tandem.settings import AppSettings, DaprSettings

LOADED: list[object] = []


@asynccontextmanager
async def load(app: FastAPI):
    LOADED.append([object() for _ in range(1000)])  # what loading a model leaves behind
    yield


def test_start_up_objects_are_frozen_once_the_lifespan_has_run():
    gc.unfreeze()
    app = make_base_app("probe", AppSettings(), DaprSettings(), lifespan=load)
    try:
        assert gc.get_freeze_count() == 0
        with TestClient(app):
            assert LOADED and gc.get_freeze_count() > 10_000  # the modules, the app and what the lifespan loaded
    finally:
        gc.unfreeze()
