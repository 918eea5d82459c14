"""vidpipe."""
