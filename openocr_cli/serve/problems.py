"""A request the service refuses: an HTTP status and a message naming the problem and what to do.

Every refusal, from the gate (auth, size, load shedding) to a bad image, is this one JSON shape,
`{"error": "..."}`, so clients parse one thing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()
