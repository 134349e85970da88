"""`python -m gateway.newkey FILE [CLIENT]`: makes sure FILE, the JSON file behind the local secret store, holds
an API key for CLIENT (default "local"), and prints that key. Keys already there are kept."""

import json
import secrets
import sys
from pathlib import Path

SECRET = "gateway-api-keys"


def ensure_key(file: Path, client: str) -> str:
    store = json.loads(file.read_text()) if file.exists() else {}
    keys = store.setdefault(SECRET, {})
    if not keys.get(client):
        keys[client] = secrets.token_urlsafe(24)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(store, indent=2) + "\n")
        file.chmod(0o600)
    return keys[client]


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(ensure_key(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "local"))
