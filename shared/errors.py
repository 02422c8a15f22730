"""Named exceptions. The CLI and the bot translate these into messages for people."""


class DeepmemError(Exception):
    """Base class: every error a user can cause or fix."""


class ConfigError(DeepmemError):
    """A setting is missing, malformed or points somewhere unusable."""


class StoreError(DeepmemError):
    """The store cannot be opened or is not one this version understands."""


class EmbedderMismatch(StoreError):
    """The store was built with another embedder than the one configured."""


class EmptyStore(StoreError):
    """The store holds no chunks yet."""


class SourceError(DeepmemError):
    """A source (folder, archive, site) cannot be read at all."""


class EmbeddingError(DeepmemError):
    """The embedder failed (model missing, endpoint unreachable, bad response)."""
