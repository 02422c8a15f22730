"""The data directory (DEEPMEM_HOME) shared by the CLI, the bot and the daemon.

    store.db          chunks, vectors (sqlite-vec) and full text (FTS5), in WAL mode
    feedback.duckdb   questions, answers and feedback events
    adapters/         deep-memory adapter versions and the pointer to the active one
    config.toml       optional settings
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["Home"]


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def store_path(self) -> Path:
        return self.root / "store.db"

    @property
    def feedback_path(self) -> Path:
        return self.root / "feedback.duckdb"

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @classmethod
    def open(cls, path: Path | str, create: bool = True) -> "Home":
        """Validate (and create) the directory; every failure names the path and the reason."""
        root = Path(path).expanduser()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"DEEPMEM_HOME={root} exists but is not a directory")
        if not root.exists():
            if not create:
                raise ConfigError(f"no store: the data directory {root} does not exist (DEEPMEM_HOME or --home); "
                                  f"check the path, or run `deepmem ingest` to create one")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create DEEPMEM_HOME={root}: {exc.strerror or exc}") from None
        if create:
            try:
                with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
                    pass
            except OSError as exc:
                raise ConfigError(f"DEEPMEM_HOME={root} is not writable: {exc.strerror or exc}") from None
        elif not os.access(root, os.R_OK | os.X_OK):
            raise ConfigError(f"DEEPMEM_HOME={root} is not readable")
        return cls(root.resolve())
