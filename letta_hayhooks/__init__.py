"""letta-hayhooks: every Letta agent as an OpenAI-compatible model, served by Haystack/Hayhooks."""

from pathlib import Path

__version__ = "0.1.0"

# The repository keeps `components/`, `pipelines/` and `cli_client.py` at its top (the project's layout); the wheel
# installs them inside this package. In a source checkout the checkout's top is searched too, so
# `letta_hayhooks.components` and friends resolve the same way in both.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "components" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))
