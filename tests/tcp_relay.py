"""A loopback TCP relay the tests can cut and restore: Letta "down" and "up" without restarting it."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpRelay:
    """Listens on a free port and forwards every connection to `target_port` while enabled."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.enabled = False
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.enabled = True

    def down(self) -> None:
        """Refuse new connections and cut every open one (like a crashed server)."""
        self.enabled = False
        with self._lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._connections.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.enabled:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.update({client, upstream})
            for src, dst, to_target in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, to_target), daemon=True).start()

    def forwarded(self, data: bytes, *, to_target: bool) -> None:
        """Called with every piece of data passed on (a subclass may keep it)."""

    def _pipe(self, src: socket.socket, dst: socket.socket, to_target: bool) -> None:
        try:
            while data := src.recv(65536):
                self.forwarded(data, to_target=to_target)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (src, dst):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._connections.discard(src)
                self._connections.discard(dst)

    def close(self) -> None:
        self.down()
        self._listener.close()
