"""One exception type for problems the user can fix; the CLI prints it as a paragraph, exit 1."""


class UserError(Exception):
    """A clear, actionable message about bad input (file, line, flag) - never shown as a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
