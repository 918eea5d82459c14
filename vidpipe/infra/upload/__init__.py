"""The upload service: tus 1.0.0 at /files/ and an S3 bucket-notification hook.

No Prefect here. What a finished upload starts is the caller's
``on_complete(CompletedUpload)`` (``vidpipe.flows.intake``); ``run_server``
serves it all on uvicorn.
"""

from vidpipe.infra.upload.complete import CompletedUpload, OnComplete
from vidpipe.infra.upload.server import is_loopback, run_server, upload_config

__all__ = ["CompletedUpload", "OnComplete", "is_loopback", "run_server", "upload_config"]
