"""Thin Prefect shells around the stages: retries, caching, run names. No media logic."""

from vidpipe.infra.runtime import apply_defaults

apply_defaults()
