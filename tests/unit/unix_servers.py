"""A unix-socket server for tests that play the other end (QEMU's monitor, a VMM's API)."""

import socket
import threading
from pathlib import Path
from typing import Callable


def serve_unix(path: Path, handle: Callable[[socket.socket], None]) -> socket.socket:
    """Listen on path and run handle(conn) for each connection, one at a time, on a
    daemon thread, until the returned listening socket is closed."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            handle(conn)
    threading.Thread(target=loop, daemon=True).start()
    return server
