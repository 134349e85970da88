from collections.abc import Iterator

import pytest

from .stack import DAPRD, Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not DAPRD.exists():
        pytest.fail(f"{DAPRD} is missing: run `make runtime` (or `make test`, which builds it)")
    stack = Stack(tmp_path_factory.mktemp("stack"))
    stack.start_redis()
    try:
        yield stack
    finally:
        stack.close()
