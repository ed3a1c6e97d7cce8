"""Story Studio: genre templates -> streamed drafts -> ratings -> a model that learns from them."""

__version__ = "0.1.0"
