"""uvicorn's HTTP/1.1 protocol with a deadline on the request head: a connection whose headers have not all
arrived --read-timeout-s after it opened (or after its last response) is closed, so a client that sends half a
header and waits cannot hold a connection for ever. uvicorn closes idle keep-alive connections on its own.
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_ATTRIBUTE = "openocr_head_timeout_s"  # set on the uvicorn.Config (it travels to worker processes)


class HeadTimeoutProtocol(H11Protocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()

    def _await_head(self) -> None:
        timeout = getattr(self.config, HEAD_TIMEOUT_ATTRIBUTE, None)
        if timeout:
            self.loop.call_later(timeout, self._head_late, self.cycle)

    def _head_late(self, waiting_after) -> None:
        """No request began since the deadline was set (the cycle is the same): close."""
        if self.cycle is waiting_after and not self.transport.is_closing():
            self.transport.close()
