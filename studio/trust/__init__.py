"""Accounts, moderation, limits and the template sandbox."""
