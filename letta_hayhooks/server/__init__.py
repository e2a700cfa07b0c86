"""The server layer: the FastAPI app built on Hayhooks, the agent registry, operator views."""
