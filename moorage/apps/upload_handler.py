"""The App page's source upload: the API's size limit, applied while the browser sends.

Django writes an uploaded file to a temp file before any view runs, with no limit. This
handler stops storing an upload once it is larger than
:data:`moorage.apps.sources.MAX_ARCHIVE_BYTES` (the API's limit, checked from the declared
length too), reads and drops the rest so the browser still gets the page, and notes it; the
view then answers with the API's ``source_too_large`` error.
"""

from __future__ import annotations

from typing import IO, Any

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler

from moorage.apps import sources

#: What a multipart body may add to the file (boundaries, headers, the CSRF field).
MULTIPART_ALLOWANCE = 64 * 1024


class ArchiveUploadHandler(TemporaryFileUploadHandler):
    """A temp-file upload that stops at the source archive limit (``too_large`` is set)."""

    too_large = False

    def handle_raw_input(self, input_data: IO[bytes], META: dict[str, str],
                         content_length: int, boundary: str, encoding: str | None = None
                         ) -> None:
        # Noted here, acted on when the file starts: the fields before it (the CSRF token)
        # are still read.
        self.too_large = content_length > sources.MAX_ARCHIVE_BYTES + MULTIPART_ALLOWANCE
        super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        if self.too_large:
            self._stop()
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > sources.MAX_ARCHIVE_BYTES:
            self._stop()
        return super().receive_data_chunk(raw_data, start)

    def _stop(self) -> None:
        self.too_large = True
        # Not a reset: the rest of the body is read and dropped, so the page can answer.
        raise StopUpload(connection_reset=False)
