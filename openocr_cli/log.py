"""The library's one logger: every module below the commands reports notes and warnings through it.

A library must not print. Modules call `logger.info(...)` for notes and `logger.warning(...)` for
warnings; the command line installs a handler that shows them on stderr (ui.install_console_logging),
and a Python caller sees them only if it configures logging (the NullHandler keeps Python's
last-resort handler from printing them).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("openocr_cli")
logger.addHandler(logging.NullHandler())
