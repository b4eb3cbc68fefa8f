"""The REST API of `corral serve`: FastAPI over the service layer (see docs/api.md)."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("corral")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
