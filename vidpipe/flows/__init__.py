"""The DAGs and the ``vidpipe`` CLI."""

from vidpipe.infra.runtime import apply_defaults

apply_defaults()
