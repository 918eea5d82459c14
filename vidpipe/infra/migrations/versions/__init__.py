"""Catalog schema revisions, oldest first. Plain SQL through ``op.execute``."""
