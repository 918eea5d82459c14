"""The ``Catalog`` handle: what vidpipe knows about every video, read and written.

Everything lives in the ``vidpipe`` schema, so the catalog can share a
database with Prefect's server. The handle is one class made of its parts,
each on the same connections (``handle``):

- ``videos``: rows, status transitions, ``publish``;
- ``results``: stage runs, detection labels, safety verdicts, ``show``;
- ``transcripts``: transcript segments and the semantic search;
- ``fingerprints``: frame hashes and near-duplicate candidates.
"""

from __future__ import annotations

from vidpipe.infra.catalog.fingerprints import Fingerprints
from vidpipe.infra.catalog.results import Results
from vidpipe.infra.catalog.transcripts import Transcripts
from vidpipe.infra.catalog.videos import Videos


class Catalog(Videos, Results, Transcripts, Fingerprints):
    """A handle on the catalog: a DSN and a few idle connections, safe across threads.

    Build one inside each task (``open_catalog``); never pass it between tasks.
    """
