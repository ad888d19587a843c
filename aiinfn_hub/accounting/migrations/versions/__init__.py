"""Revisions, oldest first: 0001_events."""
