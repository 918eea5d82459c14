"""vidpipe: turn one uploaded video into everything a video platform serves."""

__version__ = "0.1.0"
