"""The Go edge agent validates readings as the sensors service does: it must know the same channels."""

import re
from pathlib import Path

from tandem.fleet import CHANNELS

READING_GO = Path(__file__).resolve().parents[2] / "apps" / "edge-agent" / "reading.go"


def test_the_edge_agent_knows_exactly_the_fleet_channels_in_order():
    block = re.search(r"var Channels = \[\]string\{(.*?)\n\}", READING_GO.read_text(), re.S)
    assert block, "reading.go has no `var Channels = []string{...}`"
    assert tuple(re.findall(r'"([a-z_]+)"', block[1])) == CHANNELS
