import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DAPRD = ROOT / ".runtime" / ".dapr" / "bin" / "daprd"


def pytest_report_header() -> list[str]:
    if not DAPRD.exists():
        return [f"daprd: not built ({DAPRD}); run `make runtime`"]
    version = subprocess.run([DAPRD, "--version"], capture_output=True, text=True).stdout.strip()
    return [f"daprd: {version} ({DAPRD.resolve()})"]


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The repository `make models` builds; built here if it is missing or stale."""
    subprocess.run([sys.executable, str(MODELS / "build.py")], check=True, capture_output=True)
    return MODELS
