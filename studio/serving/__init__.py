"""Model loading, the model pool, generation, streaming and batching."""
