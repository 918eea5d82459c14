"""ML inference: speech (``asr``, ``whisper_weights``) and vision models.

One loader cache per process; torch, whisper, faster_whisper, ultralytics and
the like are imported only inside the functions that need them, so importing
this package is cheap.
"""
