"""The kit's sidecar client against real daprd and Redis: state with ETags, and component scopes."""

import asyncio
import uuid

import pytest

from tandem.sidecar import ETagMismatch, Sidecar, SidecarError

from .stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sidecars(stack: Stack):
    resources = stack.components({"statestore": ["keeper"]})
    return stack.start_sidecar(stack.app_id("keeper"), resources), stack.start_sidecar(
        stack.app_id("outsider"), resources
    )


def run(coroutine):
    return asyncio.run(coroutine)


def test_save_read_update_and_delete_with_etags(sidecars, stack: Stack):
    keeper, _ = sidecars
    key = f"window-{uuid.uuid4().hex}"

    async def scenario():
        async with Sidecar(keeper.url, stack.dapr_api_token) as sidecar:
            assert await sidecar.get_state("statestore", key) == (None, None)
            await sidecar.save_state("statestore", key, {"readings": [1, 2]})
            value, etag = await sidecar.get_state("statestore", key)
            assert value == {"readings": [1, 2]}
            assert etag

            await sidecar.save_state("statestore", key, {"readings": [1, 2, 3]}, etag=etag)
            # The first writer won; a second writer holding the same (now stale) ETag must lose.
            with pytest.raises(ETagMismatch):
                await sidecar.save_state("statestore", key, {"readings": [9]}, etag=etag)
            with pytest.raises(ETagMismatch):
                await sidecar.delete_state("statestore", key, etag=etag)
            value, fresh_etag = await sidecar.get_state("statestore", key)
            assert value == {"readings": [1, 2, 3]}
            assert fresh_etag != etag

            await sidecar.delete_state("statestore", key, etag=fresh_etag)
            assert await sidecar.get_state("statestore", key) == (None, None)

    run(scenario())


def test_the_state_store_is_invisible_to_apps_outside_its_scopes(sidecars, stack: Stack):
    _, outsider = sidecars

    async def scenario():
        async with Sidecar(outsider.url, stack.dapr_api_token) as sidecar:
            with pytest.raises(SidecarError) as refused:
                await sidecar.save_state("statestore", "anything", 1)
            assert "ERR_STATE_STORE_NOT_CONFIGURED" in refused.value.body

    run(scenario())


def test_the_state_api_needs_the_dapr_api_token(sidecars):
    keeper, _ = sidecars

    async def scenario():
        async with Sidecar(keeper.url, api_token="") as sidecar:
            with pytest.raises(SidecarError) as refused:
                await sidecar.get_state("statestore", "anything")
            assert refused.value.status == 401

    run(scenario())
