"""Revisions, oldest first: 0001_events, 0002_quota_adjustments."""
