"""The worker's helper threads beside a running job (lease keeper, log flusher, deployment lock
renewer): each loops until stopped, with a database connection of its own."""

from __future__ import annotations

import threading


class BackgroundLoop:
    """A daemon thread that runs `loop()` until `stop()` sets `self._stop` (loops wait on it).

    Django opens one database connection per thread, so the thread closes its own when it ends.
    """

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def loop(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        from django.db import connection

        try:
            self.loop()
        finally:
            connection.close()  # this thread's own connection
