"""
The OpenAI Conversations API, kept in Letta: enough for the Agents SDK's `OpenAIConversationsSession` and for
`responses.create(conversation=...)`.

An OpenAI conversation is created without a model, a Letta conversation belongs to an agent. So a conversation
(`conv_<hex>`) is a record in Letta, a block not attached to any agent (`openai_conversation`), holding its items
and, once a response names it with a model, the Letta conversation of that agent it is bound to (made then, with the
items stored so far as its context). Every response in the conversation adds its input and output items to the
record, so `items.list` returns the conversation in OpenAI's shape whichever process served it. A Letta
conversation id (`conv-<uuid>`, what a response's `conversation` field shows for chats found by their transcript)
is accepted as `conversation` too: it continues that conversation, if it belongs to the model's agent.

Limits: the record is one block rewritten per change (items of a long conversation with images make it large);
two processes changing one conversation at the same moment may lose one change (within a process, changes wait for
each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from letta_hayhooks.errors import OpenAIError, from_letta_exception, invalid_request
from letta_hayhooks.lru import LRU
from letta_hayhooks.openai_responses import block_id_of, conversation_id_for, list_page, not_found
from letta_hayhooks.server.access import (
    RECORD_MARK,
    ConversationRecord,
    LettaConversation,
    ReachedConversations,
    may_reach,
    record_summary,
    tenant_of,
)
from letta_hayhooks.server.agent_models import AgentModels
from letta_hayhooks.server.request_body import request_json
from letta_hayhooks.tenants import Tenant

LABEL = "openai_conversation"
MARK = RECORD_MARK
# The Conversations API takes at most this many items per request (OpenAI's limit).
_MAX_ITEMS_PER_REQUEST = 20
_ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def _tenant_id(tenant: Tenant | None) -> str | None:
    return tenant.id if tenant is not None else None


# What a stored part of these types must carry (the openai SDK's conversation item types require it).
_PART_DEFAULTS: dict[str, dict[str, Any]] = {"output_text": {"annotations": []}, "input_image": {"detail": "auto"}}


def normal_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the Conversations API shows it: with an id, messages with typed content parts, and a status."""
    kind = item.get("type") or "message"  # an EasyInputMessage has only a role and content
    out = {**item, "type": kind}
    out.setdefault("id", f"{_ITEM_PREFIXES.get(kind, 'item')}_{uuid.uuid4().hex}")
    if kind == "message":
        role = out.get("role", "user")
        text_type = "output_text" if role == "assistant" else "input_text"
        content = out.get("content")
        if isinstance(content, str):
            content = [{"type": text_type, "text": content}]
        if isinstance(content, list):
            out["content"] = [{**_PART_DEFAULTS.get(part.get("type"), {}), **part} if isinstance(part, dict)
                              else part for part in content]
    if kind in ("message", "function_call", "function_call_output"):
        out.setdefault("status", "completed")  # input items may leave it out; a stored item has one
    return out


class ConversationStore:
    """Conversation records in Letta blocks (see the module docstring)."""

    def __init__(self, models: Callable[[], AgentModels], reached: ReachedConversations | None = None) -> None:
        self.models = models
        self.reached = reached or ReachedConversations()
        self._locks: LRU = LRU()

    @property
    def client(self) -> Any:
        return self.models().catalog.async_client

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks.remember(conversation_id, lock)
        return lock

    # ---- records
    async def create(self, items: list[dict[str, Any]], metadata: dict[str, Any], tenant: Tenant | None
                     ) -> dict[str, Any]:
        record = {"items": [normal_item(i) for i in items], "agents": {}}
        value = json.dumps(record)
        block = await self.client.blocks.create(
            label=LABEL, value=value, limit=max(len(value), 1) * 2 + 10_000, description=MARK,
            metadata={"letta_hayhooks": "openai_conversation", "tenant": _tenant_id(tenant), "metadata": metadata})
        return self._object(block)

    async def load(self, conversation_id: str, tenant: Tenant | None) -> tuple[Any, dict[str, Any]]:
        """
        The record's block and its content.

        :raises OpenAIError: 404 for an id this server did not issue, or another key's conversation.
        """
        block_id = block_id_of(conversation_id)
        if block_id is None:
            msg = "conversation"
            raise not_found(msg, conversation_id, "conversation_id")
        try:
            block = await self.client.blocks.retrieve(block_id)
        except Exception as exc:  # noqa: BLE001 - a missing block is a 404, Letta down a 503
            if getattr(exc, "status_code", None) in (400, 404, 422):  # Letta refuses ids that are not uuid4s
                msg_0 = "conversation"
                raise not_found(msg_0, conversation_id, "conversation_id") from None
            raise from_letta_exception(exc) from None
        meta = block.metadata or {}
        if block.label != LABEL or meta.get("letta_hayhooks") != "openai_conversation" or \
                not may_reach(tenant, ConversationRecord(meta.get("tenant"))):
            msg = "conversation"
            raise not_found(msg, conversation_id, "conversation_id")
        return block, json.loads(block.value or "{}")

    async def _save(self, block: Any, record: dict[str, Any], metadata: dict[str, Any] | None = None) -> Any:
        value = json.dumps(record)
        changes: dict[str, Any] = {"value": value, "limit": len(value) * 2 + 10_000}
        if metadata is not None:
            changes["metadata"] = {**(block.metadata or {}), "metadata": metadata}
        return await self.client.blocks.update(block.id, **changes)

    def _object(self, block: Any) -> dict[str, Any]:
        created = block.created_at.timestamp() if getattr(block, "created_at", None) else time.time()
        return {"id": conversation_id_for(block.id), "object": "conversation", "created_at": int(created),
                "metadata": (block.metadata or {}).get("metadata") or {}}

    # ---- what responses need
    async def bind(self, conversation_id: str, agent_id: str, tenant: Tenant | None
                   ) -> tuple[str, bool, list[dict[str, Any]] | None]:
        """
        The agent's Letta conversation for an OpenAI conversation: `(id, made just now, the items to seed it with)`.

        :raises OpenAIError: 404 for an unknown conversation, 400 for a Letta conversation of another agent.
        """
        if conversation_id.startswith("conv-"):
            missing = not_found("conversation", conversation_id, "conversation")
            try:
                found = await self.client.conversations.retrieve(conversation_id)
            except Exception as exc:  # noqa: BLE001 - a missing conversation is a 404
                if getattr(exc, "status_code", None) in (400, 404, 422):
                    raise missing from None
                raise from_letta_exception(exc) from None
            info = self.models().catalog.by_id.get(found.agent_id)
            if not may_reach(tenant, LettaConversation(info, found.agent_id, found.summary)):
                raise missing  # another key's conversation is answered like a missing one
            if found.agent_id != agent_id:
                msg = f"Conversation '{conversation_id}' belongs to another model."
                raise invalid_request(msg, param="conversation")
            self.reached.remember(conversation_id, tenant)
            return conversation_id, False, None
        async with self._lock(conversation_id):
            block, record = await self.load(conversation_id, tenant)
            bound = (record.get("agents") or {}).get(agent_id)
            if bound is not None:
                return bound, False, None
            # the summary carries the record and the tenant's scope: its responses are the tenant's (access.py)
            made = await self.client.conversations.create(agent_id=agent_id,
                                                          summary=record_summary(agent_id, conversation_id, tenant))
            record.setdefault("agents", {})[agent_id] = made.id
            await self._save(block, record)
        return made.id, True, list(record.get("items") or [])

    async def append(self, conversation_id: str, items: list[dict[str, Any]], tenant: Tenant | None
                     ) -> list[dict[str, Any]]:
        """Add items to a conversation's record; returns them with their ids."""
        added = [normal_item(i) for i in items]
        async with self._lock(conversation_id):
            block, record = await self.load(conversation_id, tenant)
            record.setdefault("items", []).extend(added)
            await self._save(block, record)
        return added

    # ---- routes (an OpenAIError, or Letta's failure, is answered by the app's error handlers)
    def install(self, router: APIRouter) -> None:
        """`/v1/conversations` and its items routes."""

        def checked_items(body: dict[str, Any]) -> list[dict[str, Any]]:
            items = body.get("items") or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise invalid_request("'items' must be a list of items.", param="items")
            if len(items) > _MAX_ITEMS_PER_REQUEST:
                raise invalid_request(f"At most {_MAX_ITEMS_PER_REQUEST} items can be added at once.", param="items")
            return items

        @router.post("/v1/conversations", summary="Create a conversation (a record in Letta; see the README)")
        async def create(request: Request) -> dict:
            body = request_json(request, required=False)
            metadata = body.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise invalid_request("'metadata' must be an object.", param="metadata")
            return await self.create(checked_items(body), metadata, tenant_of(request.scope))

        @router.get("/v1/conversations/{conversation_id}", summary="Retrieve a conversation")
        async def retrieve(conversation_id: str, request: Request) -> dict:
            block, _ = await self.load(conversation_id, tenant_of(request.scope))
            return self._object(block)

        @router.post("/v1/conversations/{conversation_id}", summary="Update a conversation's metadata")
        async def update(conversation_id: str, request: Request) -> dict:
            body = request_json(request, required=False)
            async with self._lock(conversation_id):
                block, record = await self.load(conversation_id, tenant_of(request.scope))
                block = await self._save(block, record, metadata=body.get("metadata") or {})
            return self._object(block)

        @router.delete("/v1/conversations/{conversation_id}", summary="Delete a conversation")
        async def delete(conversation_id: str, request: Request) -> dict:
            block, record = await self.load(conversation_id, tenant_of(request.scope))
            for letta_conversation in (record.get("agents") or {}).values():
                with contextlib.suppress(Exception):  # already gone
                    await self.client.conversations.delete(letta_conversation)
            await self.client.blocks.delete(block.id)
            return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

        @router.get("/v1/conversations/{conversation_id}/items", summary="List a conversation's items")
        async def list_items(conversation_id: str, request: Request, order: str = "desc", limit: int = 20,
                             after: str | None = None) -> dict:
            _, record = await self.load(conversation_id, tenant_of(request.scope))
            return list_page(record.get("items") or [], order=order, limit=limit, after=after)

        @router.post("/v1/conversations/{conversation_id}/items", summary="Add items to a conversation")
        async def add_items(conversation_id: str, request: Request) -> dict:
            items = checked_items(request_json(request, required=False))
            added = await self.append(conversation_id, items, tenant_of(request.scope))
            # "" for no items, as list_page: the openai SDK's list type requires strings
            return {"object": "list", "data": added, "first_id": added[0]["id"] if added else "",
                    "last_id": added[-1]["id"] if added else "", "has_more": False}

        @router.get("/v1/conversations/{conversation_id}/items/{item_id}", summary="Retrieve a conversation item")
        async def get_item(conversation_id: str, item_id: str, request: Request) -> dict:
            _, record = await self.load(conversation_id, tenant_of(request.scope))
            found = next((i for i in record.get("items") or [] if i.get("id") == item_id), None)
            if found is None:
                raise not_found("item", item_id, "item_id")
            return found

        @router.delete("/v1/conversations/{conversation_id}/items/{item_id}", summary="Delete a conversation item")
        async def delete_item(conversation_id: str, item_id: str, request: Request) -> dict:
            async with self._lock(conversation_id):
                block, record = await self.load(conversation_id, tenant_of(request.scope))
                items = record.get("items") or []
                kept = [i for i in items if i.get("id") != item_id]
                if len(kept) == len(items):
                    raise not_found("item", item_id, "item_id")
                record["items"] = kept
                block = await self._save(block, record)
            return self._object(block)
