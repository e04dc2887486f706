"""The HTTP layer (FastAPI): app factory, thin routes, one error handler."""
