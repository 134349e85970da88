"""The features service: rolling windows of readings per machine, predictions from the maintenance models."""
