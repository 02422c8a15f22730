"""deepmem's core: documents, the vector store, search and deep memory.

Nothing here knows about Slack or scheduling; `bot/` and `daemon/` build on this package.
"""

__version__ = "0.1.0"
