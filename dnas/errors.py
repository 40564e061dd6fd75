"""The one error type users see: a single line that says what is wrong and what to do."""


class DnasError(Exception):
    """Bad input or an impossible request. The CLI prints ``dnas: error: <message>`` and exits 2."""


class ConfigError(DnasError):
    """A search config that does not resolve (unknown option, wrong type, an impossible space ×
    strategy pair); raised before any data are loaded, so the CLI can name the file it came from."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (its type's name where it has none), cut to ``limit``
    characters: what a one-line ``DnasError`` quotes of a library's multi-line exception."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:limit] if limit else line
