"""The one error type users see: a single line that says what is wrong and what to do."""


class DnasError(Exception):
    """Bad input or an impossible request. The CLI prints ``dnas: error: <message>`` and exits 2."""
