"""
The pipeline's last step: the generator's final reply as an OpenAI `chat.completion` dict.
"""

from __future__ import annotations

from typing import Any

from haystack import component, default_from_dict, default_to_dict
from haystack.dataclasses import ChatMessage

from letta_hayhooks.errors import upstream_error
from letta_hayhooks.openai_wire import completion_from_reply


@component
class StreamAdapter:
    """
    Turns the Letta generator's final reply into an OpenAI `chat.completion` dict.

    Takes `replies` (from `LettaChatGenerator`), the advertised `model` name and a `completion_id`; gives
    `completion`: the full response, with `finish_reason`, `usage`, `reasoning_content` and client `tool_calls`.
    Streaming requests use the same mapping chunk by chunk (`letta_hayhooks.openai_wire.OpenAIChunkEncoder`).

    ### Usage example
    ```python
    adapter = StreamAdapter()
    out = adapter.run(replies=[ChatMessage.from_assistant("hi", meta={"finish_reason": "stop"})], model="demo",
                      completion_id="chatcmpl-1")
    assert out["completion"]["choices"][0]["message"]["content"] == "hi"
    ```
    """

    def __init__(self, *, think_tags: bool = False) -> None:
        """
        Create the adapter.

        :param think_tags: Put reasoning inside `<think>...</think>` in `content` instead of `reasoning_content`.
        """
        self.think_tags = think_tags

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component."""
        return default_to_dict(self, think_tags=self.think_tags)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamAdapter:
        """Deserialize this component."""
        return default_from_dict(cls, data)

    @component.output_types(completion=dict)
    def run(self, replies: list[ChatMessage], model: str, completion_id: str) -> dict[str, Any]:
        """
        Build the OpenAI response for the first reply.

        :param replies: The generator's replies (one assistant message).
        :param model: The model name the client asked for.
        :param completion_id: The response id to use (`chatcmpl-...`).
        :returns: `{"completion": dict}` in the OpenAI `chat.completion` shape.
        """
        if not replies:
            msg = "The Letta agent returned no reply."
            raise upstream_error(msg)
        return {
            "completion": completion_from_reply(
                replies[0], completion_id=completion_id, model=model, think_tags=self.think_tags
            )
        }

    @component.output_types(completion=dict)
    async def run_async(self, replies: list[ChatMessage], model: str, completion_id: str) -> dict[str, Any]:
        """
        Async twin of `run`.

        :param replies: The generator's replies (one assistant message).
        :param model: The model name the client asked for.
        :param completion_id: The response id to use (`chatcmpl-...`).
        :returns: `{"completion": dict}` in the OpenAI `chat.completion` shape.
        """
        return self.run(replies=replies, model=model, completion_id=completion_id)
