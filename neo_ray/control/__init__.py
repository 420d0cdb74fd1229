"""The control plane: the FastAPI app (under Ray Serve or as plain ASGI) and its routes."""
