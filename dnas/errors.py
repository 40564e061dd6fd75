"""The one error type users see: a single line that says what is wrong and what to do."""


class DnasError(Exception):
    """Bad input or an impossible request. The CLI prints ``dnas: error: <message>`` and exits 2."""


class ConfigError(DnasError):
    """A search config that does not resolve (unknown option, wrong type, an impossible space ×
    strategy pair); raised before any data are loaded, so the CLI can name the file it came from."""
