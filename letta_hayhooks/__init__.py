"""letta-hayhooks: every Letta agent as an OpenAI-compatible model, served by Haystack/Hayhooks."""

# Hayhooks reads its settings once, when first imported: the package sets this server's defaults before that.
from letta_hayhooks import hayhooks_env  # noqa: F401

__version__ = "0.1.0"
