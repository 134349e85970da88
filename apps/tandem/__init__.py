"""The Tandem kit: what every model service shares (protocol, models, sidecar client, server, settings)."""
