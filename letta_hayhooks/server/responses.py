"""
The OpenAI Responses API on the letta-hayhooks server: `POST /v1/responses` through the agents' own pipelines, and
the stored responses (`GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`) read from Letta.

A response is a Letta run: its id names the run (`resp_<run uuid>`), so the run's conversation, messages and usage
are found again by any process, after restarts. `previous_response_id` continues the run's conversation (only the
new input items are sent), `conversation` names a conversation (`conversations_api.py`), and without either the
chat identity rules apply (the session headers, Codex's `session-id` among them, or the transcript).
Letta 0.16.8 cannot delete a run (its route fails), so a deleted response is recorded as a small Letta block
(`deleted_response_<hex>`) and answered 404 from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from hayhooks import log
from haystack.dataclasses import StreamingChunk
from starlette.datastructures import Headers

from letta_hayhooks.chat.service import AgentChat, Turn, reply_chunks
from letta_hayhooks.errors import (
    OpenAIError,
    from_letta_exception,
    invalid_request,
    model_not_found,
)
from letta_hayhooks.letta_access.events import LettaEventTranslator
from letta_hayhooks.letta_access.paging import page_items
from letta_hayhooks.openai_responses import (
    ResponseEncoder,
    ResponsesRequest,
    encode_all,
    input_item,
    item_reference,
    list_page,
    not_found,
    parse_request,
    response_id_for,
    run_id_of,
    sse_frame,
    to_chat,
)
from letta_hayhooks.server.access import (
    Agent,
    LettaConversation,
    ReachedConversations,
    may_reach,
    naming_pending,
    tenant_of,
)
from letta_hayhooks.server.agent_models import AgentModels
from letta_hayhooks.server.conversations_api import ConversationStore
from letta_hayhooks.server.request_body import request_json
from letta_hayhooks.tenants import Tenant

RESPONSES_PATHS = ("/v1/responses", "/responses")
# The most messages of one run read back for a stored response (a run is one turn: a few steps).
_RUN_MESSAGES = 500
_DELETED_PREFIX = "deleted_response_"
# A spare conversation's summary is written just after its first turn reached Letta: how long an owner check waits
_NAMING_WAITS = 40
_NAMING_WAIT_SECONDS = 0.05


class ResponseStore:
    """Stored responses, read from Letta: a response is a run, its items the run's messages."""

    def __init__(self, models: Callable[[], AgentModels]) -> None:
        self.models = models
        self.reached = ReachedConversations()

    @property
    def client(self) -> Any:
        return self.models().catalog.async_client

    async def run(self, response_id: str, tenant: Tenant | None, *, param: str = "response_id") -> Any:
        """
        The Letta run of a response the tenant may reach (`access.may_reach`: its agent, and the conversation it ran
        in, whose summary names the tenant's scope).

        :raises OpenAIError: 404 for an id this server did not issue, a deleted response, or one the tenant may not
            reach: the same answer, so a key cannot tell another key's response from a missing one.
        """
        missing = not_found("response", response_id, param)
        run_id = run_id_of(response_id)
        if run_id is None:
            raise missing
        try:
            run, deleted = await asyncio.gather(self.client.runs.retrieve(run_id), self._deleted(response_id))
        except Exception as exc:  # noqa: BLE001 - a missing run is a 404, Letta down a 503
            if getattr(exc, "status_code", None) in (400, 404, 422):  # Letta refuses ids that are not uuid4s
                raise missing from None
            raise from_letta_exception(exc) from None
        if deleted:
            raise missing
        if tenant is not None and not self.reached.known(run.conversation_id, tenant):
            info = self.models().catalog.by_id.get(run.agent_id)
            summary = await self._summary(run.conversation_id) if may_reach(tenant, Agent(info)) else None
            if not may_reach(tenant, LettaConversation(info, run.agent_id, summary)):
                raise missing
            self.reached.remember(run.conversation_id, tenant)
        return run

    async def _summary(self, conversation_id: str | None) -> str | None:
        """A conversation's summary (None for the agent's default thread or a deleted conversation), once the
        summary of a spare just handed to a turn has been written (a moment after the turn reached Letta)."""
        if not conversation_id or conversation_id == "default":
            return None
        for _ in range(_NAMING_WAITS):
            try:
                conversation = await self.client.conversations.retrieve(conversation_id)
            except Exception as exc:  # noqa: BLE001 - a missing conversation has no owner; Letta down is a 503
                if getattr(exc, "status_code", None) in (400, 404, 422):
                    return None
                raise from_letta_exception(exc) from None
            if not naming_pending(conversation.summary):
                return conversation.summary
            await asyncio.sleep(_NAMING_WAIT_SECONDS)
        return None

    async def _deleted(self, response_id: str) -> bool:
        label = _DELETED_PREFIX + response_id.removeprefix("resp_")
        return bool(page_items(await self.client.blocks.list(label=label, limit=1)))

    async def messages(self, run_id: str) -> list[dict[str, Any]]:
        page = await self.client.runs.messages.list(run_id, limit=_RUN_MESSAGES, order="asc")
        return [m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(m) for m in page_items(page)]

    async def response_object(self, run: Any) -> dict[str, Any]:
        """The stored response: its output rebuilt from the run's messages the way the stream encoded them."""
        messages, usage = await asyncio.gather(self.messages(run.id), self._usage(run.id))
        info = self.models().catalog.by_id.get(run.agent_id)
        created = run.created_at.timestamp() if run.created_at else time.time()
        encoder = ResponseEncoder(response_id_for(run.id), info.model_id if info else run.agent_id,
                                  _stored_echo(run), created_at=created)
        answer = _output_messages(messages)
        names = {str((m.get("tool_call") or {}).get("name")) for m in answer
                 if m.get("message_type") == "approval_request_message"}
        translator = LettaEventTranslator(client_tool_names=names)
        chunks: list[StreamingChunk] = []
        for message in answer:
            chunks.extend(translator.feed(message))
        if run.stop_reason:
            translator.feed({"message_type": "stop_reason", "stop_reason": run.stop_reason})
        final = translator.finish()
        for chunk in final:
            chunk.meta["usage"] = usage
        response = encode_all(encoder, [*chunks, *final])
        status = {"completed": response["status"], "failed": "failed", "cancelled": "cancelled"}.get(
            run.status or "", "in_progress")
        if status != response["status"]:
            response = {**response, "status": status, "usage": response["usage"] if status != "in_progress" else None}
            if status == "failed":
                response["error"] = {"code": "server_error", "message": "The Letta run failed."}
        return response

    async def _usage(self, run_id: str) -> dict[str, Any] | None:
        try:
            usage = await self.client.runs.usage.retrieve(run_id)
        except Exception:  # noqa: BLE001 - a response without usage is still the response
            return None
        return usage.model_dump(mode="json") if hasattr(usage, "model_dump") else dict(usage)

    async def input_items(self, run: Any) -> list[dict[str, Any]]:
        """The run's input: the user messages and tool results it was given, as input items."""
        hex_id = response_id_for(run.id).removeprefix("resp_")
        items = []
        for i, message in enumerate(await self.messages(run.id)):
            kind = message.get("message_type")
            if kind == "user_message":
                item = input_item({"role": "user", "content": _letta_content(message.get("content"))},
                                  f"msg_{hex_id}_i{i}")
                if item is not None:
                    items.append(item)
            elif kind == "approval_response_message":
                items.extend({"id": f"fco_{hex_id}_i{i}", "type": "function_call_output",
                              "call_id": result.get("tool_call_id"), "output": result.get("tool_return") or "",
                              "status": "completed"}
                             for result in message.get("approvals") or []
                             if isinstance(result, dict) and result.get("type") == "tool")
        return items

    async def delete(self, response_id: str, tenant: Tenant | None) -> None:
        """Forget a response: Letta cannot delete a run, so the deletion is recorded beside it."""
        await self.run(response_id, tenant)
        hex_id = response_id.removeprefix("resp_")
        await self.client.blocks.create(label=_DELETED_PREFIX + hex_id, value=response_id,
                                         description="letta-hayhooks: a deleted response",
                                         metadata={"letta_hayhooks": "deleted_response"})

    async def output_item(self, item_id: str, tenant: Tenant | None) -> dict[str, Any]:
        """
        An output item this server issued, as an input item (for `item_reference`).

        :raises OpenAIError: 404 when the id is not an item of a response the tenant may reach.
        """
        ref = item_reference(item_id)
        # 404 whether the item is missing or another key's: a key cannot tell the two apart
        unknown = OpenAIError(404, f"The referenced item '{item_id}' is not an item of a stored response.",
                              type="invalid_request_error", param="input", code="invalid_item_reference")
        if ref is None:
            raise unknown
        _kind, response_id, index = ref
        try:
            run = await self.run(response_id, tenant, param="input")
        except OpenAIError as error:
            if error.status == 404:
                raise unknown from None
            raise
        output = (await self.response_object(run))["output"]
        found = next((item for item in output if item.get("id") == item_id), None)
        if found is None or index >= len(output):
            raise unknown
        return found


def _letta_content(content: Any) -> Any:
    """Letta message content as Chat Completions content (text, images as URLs)."""
    if isinstance(content, str) or content is None:
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image":
            source = part.get("source") or {}
            url = source.get("url") or f"data:{source.get('media_type')};base64,{source.get('data')}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _output_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages of a run that make up its answer (after the last input it was given)."""
    answer = []
    for message in messages:
        if message.get("message_type") in ("user_message", "approval_response_message", "system_message"):
            answer = []  # the answer follows the run's (last) input
            continue
        answer.append(message)
    return answer


def _stored_echo(run: Any) -> dict[str, Any]:
    """What a stored response says about its request: Letta keeps the run, not the request's parameters."""
    return {
        "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": None, "top_p": None,
        "tool_choice": "auto", "tools": [], "previous_response_id": None,
        "conversation": {"id": run.conversation_id} if run.conversation_id else None, "store": True,
        "max_output_tokens": None, "reasoning": {"effort": None, "summary": None},
        "text": {"format": {"type": "text"}}, "truncation": "disabled", "prompt_cache_key": None, "user": None,
    }


class ResponsesEndpoint:
    """`POST /v1/responses` for one server: the request, its conversation, the turn, and its encoding."""

    def __init__(self, models: Callable[[], AgentModels], store: ResponseStore,
                 conversations: ConversationStore) -> None:
        self.models = models
        self.store = store
        self.conversations = conversations

    async def respond(self, body: dict[str, Any], scope: MutableMapping[str, Any]) -> Response:
        """The response to a request (its JSON body, nulls dropped).

        :raises OpenAIError: for every refusal or failure before a stream starts."""
        tenant = tenant_of(scope)
        parsed = parse_request(body)
        agent_models = self.models()
        chat = agent_models.chat_for(await agent_models.resolve(parsed.model, tenant))
        if chat is None:  # another pipeline: Hayhooks' `hayhooks run` route serves those, not this one
            raise model_not_found(parsed.model)
        return await self._answer(chat, parsed, body, scope, tenant)

    async def _answer(self, chat: AgentChat, parsed: ResponsesRequest, body: dict[str, Any],
                      scope: MutableMapping[str, Any], tenant: Tenant | None) -> Any:
        if parsed.ignored_tools:
            log.info("Responses request for '{}': tool types the agent cannot run are ignored: {}",
                     parsed.model, ", ".join(sorted(set(parsed.ignored_tools))))
        await self._resolve_references(parsed, tenant)
        own = list(parsed.items)  # what this request adds to a stored conversation
        conversation_id, seed, stored = await self._conversation(chat, parsed, tenant)
        if stored is not None:
            parsed.items = [*stored, *parsed.items]  # the conversation's earlier items: the new conversation's context
        turn_input = to_chat(parsed, body)
        if turn_input.ignored_items:
            log.info("Responses request for '{}': hosted-tool items ignored: {}", parsed.model,
                     ", ".join(sorted(set(turn_input.ignored_items))))
        headers = Headers(scope=scope)
        turn = await chat.start_turn(parsed.model, turn_input.messages, turn_input.body, headers, tenant=tenant,
                                     request_id=f"resp-{uuid.uuid4().hex}", conversation_id=conversation_id,
                                     seed_history=seed, require_user=conversation_id is None, route="responses")
        if parsed.stream:
            return await self._stream(turn, chat, parsed, own, tenant)
        assert turn.reply is not None
        # the conversation is the tenant's (the session rules chose it for this key): a continuation need not ask
        self.store.reached.remember((turn.reply.meta or {}).get("conversation_id"), tenant)
        encoder = ResponseEncoder(response_id_for((turn.reply.meta or {}).get("run_id")), chat.model_id, parsed.echo)
        response = encode_all(encoder, reply_chunks(turn.reply))
        await self._remember(parsed, own, response, tenant)
        return JSONResponse(response)

    async def _resolve_references(self, parsed: ResponsesRequest, tenant: Tenant | None) -> None:
        if not parsed.references:
            return
        items: list[dict[str, Any]] = []
        for item in parsed.items:
            if item.get("type") != "item_reference":
                items.append(item)
                continue
            ref = item_reference(str(item.get("id")))
            if ref is not None and ref[0] == "rs":
                continue  # the agent's reasoning stays in Letta: nothing to resolve
            items.append(await self.store.output_item(str(item.get("id")), tenant))
        parsed.items = items

    async def _conversation(self, chat: AgentChat, parsed: ResponsesRequest, tenant: Tenant | None
                            ) -> tuple[str | None, bool, list[dict[str, Any]] | None]:
        """The Letta conversation the request names, whether it was made just now, and its stored items then."""
        if parsed.previous_response_id:
            try:
                run = await self.store.run(parsed.previous_response_id, tenant, param="previous_response_id")
            except OpenAIError as error:
                if error.status != 404:
                    raise
                # OpenAI's message and code; 404 whether it is missing or another key's (the two look the same)
                msg = f"Previous response with id '{parsed.previous_response_id}' not found."
                raise OpenAIError(404, msg, type="invalid_request_error", param="previous_response_id",
                                  code="previous_response_not_found") from None
            if run.agent_id != chat.agent_id:
                msg = (f"Response '{parsed.previous_response_id}' belongs to another model; continue it with that "
                       "model.")
                raise invalid_request(msg, param="previous_response_id")
            return run.conversation_id or "default", False, None
        if parsed.conversation:
            return await self.conversations.bind(parsed.conversation, chat.agent_id, tenant)
        return None, False, None

    async def _remember(self, parsed: ResponsesRequest, own: list[dict[str, Any]], response: dict[str, Any],
                        tenant: Tenant | None) -> None:
        """A response in a stored conversation adds its input and output items to it."""
        if parsed.conversation and parsed.conversation.startswith("conv_"):
            await self.conversations.append(parsed.conversation, [*own, *response["output"]], tenant)

    async def _stream(self, turn: Turn, chat: AgentChat, parsed: ResponsesRequest, own: list[dict[str, Any]],
                      tenant: Tenant | None) -> Any:
        chunks = turn.stream()
        first = await anext(chunks, None)
        run_id = (first.meta or {}).get("run_id") if first is not None else None
        encoder = ResponseEncoder(response_id_for(run_id), chat.model_id, parsed.echo)

        async def frames() -> AsyncIterator[str]:
            # the events one chunk makes go out in one write (the lifecycle events around a delta come in threes)
            ended = False
            try:
                yield "".join(sse_frame(event) for event in encoder.start())
                chunk = first
                while chunk is not None:
                    if not ended:
                        events = encoder.feed(chunk)
                        if chunk.finish_reason is not None:
                            # the answer is complete: end the stream now; the rest of the pipeline finishes after
                            events = [*events, *encoder.complete(chunk.finish_reason, (chunk.meta or {}).get("usage"))]
                            ended = True
                        if events:
                            yield "".join(sse_frame(event) for event in events)
                        if ended:
                            assert encoder.final is not None
                            await self._remember(parsed, own, encoder.final, tenant)
                    chunk = await anext(chunks, None)
            except OpenAIError as error:
                log.warning("Response stream {} failed: {}", encoder.response_id, error.message)
                if not ended:
                    yield sse_frame(encoder.fail(error)[0])
                return
            finally:
                if turn.chunks is not None:
                    await _close_quietly(turn.chunks)
            if not ended:  # the turn ended without its last chunk: never leave the client waiting
                yield sse_frame(encoder.fail(OpenAIError(502, "The agent's answer ended early.",
                                                         type="server_error"))[0])

        return StreamingResponse(frames(), media_type="text/event-stream")


async def _close_quietly(chunks: Any) -> None:
    with contextlib.suppress(Exception):  # the turn already reported its end
        await chunks.aclose()


def responses_router(models: Callable[[], AgentModels]) -> APIRouter:
    """The Responses routes and, with the same stores, the Conversations routes."""
    router = APIRouter(tags=["openai"])
    store = ResponseStore(models)
    conversations = ConversationStore(models, store.reached)
    endpoint = ResponsesEndpoint(models, store, conversations)

    async def create_response(request: Request) -> Response:
        return await endpoint.respond(request_json(request), request.scope)

    for path in RESPONSES_PATHS:
        router.add_api_route(path, create_response, methods=["POST"], include_in_schema=path.startswith("/v1"),
                             summary="Create a model response (OpenAI Responses API; one turn of a Letta agent)")

    @router.get("/v1/responses/{response_id}", summary="Retrieve a stored response (its Letta run)")
    async def get_response(response_id: str, request: Request) -> dict:
        return await store.response_object(await store.run(response_id, tenant_of(request.scope)))

    @router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
    async def delete_response(response_id: str, request: Request) -> dict:
        await store.delete(response_id, tenant_of(request.scope))
        return {"id": response_id, "object": "response", "deleted": True}

    @router.get("/v1/responses/{response_id}/input_items", summary="List a stored response's input items")
    async def input_items(response_id: str, request: Request, order: str = "desc", limit: int = 20,
                          after: str | None = None) -> dict:
        items = await store.input_items(await store.run(response_id, tenant_of(request.scope)))
        return list_page(items, order=order, limit=limit, after=after)

    conversations.install(router)
    return router
