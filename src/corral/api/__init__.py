"""The REST API of `corral serve`: FastAPI over the service layer (see docs/api.md)."""
