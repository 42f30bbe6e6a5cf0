"""The one exception type a user's data or arguments can cause in `datasets`."""


class DatasetError(ValueError):
    """Bad input data or arguments: the message is one line that names the file and the fix.

    The preparation CLI prints it as a single `error:` line (no traceback) and exits with status 1.
    """


class BadImageError(DatasetError):
    """One image file cannot be used. `path` is the file, `reason` the short cause.

    Raised per file, so `--skip-bad` can skip exactly these and report them.
    """

    def __init__(self, path, reason, fix=None):
        self.path = str(path)
        self.reason = reason
        message = f"{self.path}: {reason}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)
