"""Errors raised by the data layer. Every bad file ends in one of these, never in a crash or wrong data."""

from __future__ import annotations


class DataError(ValueError):
    """Base class of the data layer's input errors (a ``ValueError``)."""


class CorruptFileError(DataError):
    """A file is truncated, corrupted or not in the format it claims; names the file and what is wrong.

    Example:
        >>> str(CorruptFileError("a.bin", "7 bytes is not a whole number of 5-byte events"))
        'a.bin: 7 bytes is not a whole number of 5-byte events'
        >>> str(CorruptFileError("b.pkl", "cannot parse 'U\\x0bdata\\n'"))  # a quoted newline stays on one line
        "b.pkl: cannot parse 'U\\x0bdata '"
    """

    def __init__(self, path, what: str):
        self.path = str(path)
        self.what = " ".join(str(what).split("\n"))  # one line, even when it quotes bytes of the file
        super().__init__(f"{self.path}: {self.what}")


class UnknownFormatError(CorruptFileError):
    """``read_events`` could not recognise the file's format."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are missing (and download is off or failed).

    The message names the dataset, the exact files expected, every folder searched and the download URL.
    """


class DownloadError(DataError):
    """A download failed (network error, HTTP error or checksum mismatch)."""

