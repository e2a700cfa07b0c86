"""letta-hayhooks: every Letta agent as an OpenAI-compatible model, served by Haystack/Hayhooks."""

__version__ = "0.1.0"
