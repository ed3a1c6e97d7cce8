"""Ratings and picks -> training data -> fine-tune -> gate -> a new version."""
