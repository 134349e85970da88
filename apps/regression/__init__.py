"""The regression service: tabular models (regression, classification, clustering, reduction)."""
