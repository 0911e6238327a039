"""A clip's checked descriptor (opener.Source.open) → a response streamed from that descriptor, HTTP
Range included.

Starlette's FileResponse opens its path when it sends the body, a third look at a path that was
checked before (issue 30's race). FdResponse is FileResponse with the file it reads swapped for
the descriptor that was opened and checked: the Range, If-Range, 206/416 and multipart handling
stay Starlette's; no path is ever opened again, and pathsend (an ASGI server opening the path
itself) is never offered.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.responses import FileResponse

from autotag.opener import FdFile


class FdResponse(FileResponse):
    """FileResponse over an opened, checked file (opener.FdFile); the file is closed when the
    response is done, sent or not."""

    def __init__(self, file: FdFile, stat_result: os.stat_result, **kwargs) -> None:
        super().__init__(file.name or "clip", stat_result=stat_result, **kwargs)
        self.file = file

    async def __call__(self, scope, receive, send) -> None:
        scope = {**scope, "extensions": {k: v for k, v in scope.get("extensions", {}).items()
                                         if k != "http.response.pathsend"}}
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        self.file.seek(0)
        yield anyio.AsyncFile(self.file)  # type: ignore[arg-type]  # read and seek, in threads
