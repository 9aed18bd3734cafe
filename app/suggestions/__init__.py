"""Code suggestions: computed by the worker from the codebook (rules) and the active model."""
