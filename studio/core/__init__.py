"""The studio's use cases, composed by a small Studio."""
