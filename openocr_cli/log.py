"""The library's one logger, "openocr_cli": every module below the commands reports notes and warnings through it
or through a child (`logging.getLogger(__name__)` names one: "openocr_cli.hub.api").

A library must not print. Modules call `logger.info(...)` for notes and `logger.warning(...)` for
warnings; the command line installs a handler that shows them on stderr (ui.install_console_logging),
and a Python caller sees them only if it configures logging (the NullHandler keeps Python's
last-resort handler from printing them).

`run_logger` ("openocr_cli.train_log") carries a training run's log, the lines of OUTPUT/train.log
(training/run.py opens that file). Its records reach the library logger's handlers like any child's;
the command's console leaves them to the training display, which shows the run its own way.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("openocr_cli")
logger.addHandler(logging.NullHandler())

RUN_LOGGER = "openocr_cli.train_log"
run_logger = logging.getLogger(RUN_LOGGER)
