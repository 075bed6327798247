"""Errors a user can meet, each naming what is wrong and what to do."""


class WBCError(Exception):
    """Base class: a problem with the user's input, data or parameters."""


class DataError(WBCError):
    """The dataset folder is missing, incomplete or not in a known layout."""


class ParameterError(WBCError, ValueError):
    """A run or study parameter has a bad type or value."""


class RunExistsError(WBCError):
    """A finished run with these parameters exists; pass --reuse or --force."""


class ImageError(WBCError):
    """An image file cannot be read, or is refused (too large to decode safely); the message is the reason."""
