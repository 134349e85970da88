"""Recipes that build the model repository; each module builds one model (see models/build.py)."""
