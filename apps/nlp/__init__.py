"""The NLP service: sentence embeddings, sentiment, zero-shot classification and semantic search."""
