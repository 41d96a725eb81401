"""What models run on: inference backends, weights, the tracker state store, the embedding cache, Redis."""
