"""The purchase and device HTTP API (FastAPI): thin routers over the registry repository."""
