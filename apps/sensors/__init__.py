"""The sensors service: validates batches of machine readings and publishes them to the `readings` topic."""
