"""Nodes and their tokens: a created Node gets a token (returned once); rotation replaces it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mesh.resources.core import NODE
from mesh.tokens import TOKEN_ANNOTATION, TokenError, check_current

from . import errors
from .auth import NODE_ROLE, Principal
from .node_tokens import NodeTokenSigner, new_token_id, token_request, with_token_id
from .repository import PATCH_MERGE, Repository, WriteOptions
from .store.state import Index

MAX_TTL = timedelta(days=3650)
MIN_TTL = timedelta(minutes=10)


class NodeService:
    """Creates Nodes with tokens, rotates tokens, and authenticates callers holding one."""

    def __init__(self, repo: Repository, index: Index, signer: NodeTokenSigner, ttl: timedelta):
        self.repo = repo
        self.index = index
        self.signer = signer
        self.ttl = ttl

    async def create(self, body: Any, opts: WriteOptions) -> dict[str, Any]:
        """Create the Node recording a fresh token id; answer with the object plus its token."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        token_id = new_token_id()
        stored = await self.repo.create(NODE, "", with_token_id(body, token_id), opts)
        token, _expires = self.signer.issue(stored.name, token_id, self.ttl)
        answer = {**stored.data, "metadata": {**stored.data["metadata"]}}
        answer["metadata"]["annotations"] = {**answer["metadata"].get("annotations", {}), TOKEN_ANNOTATION: token}
        return answer

    async def rotate(self, name: str, request: Any) -> dict[str, Any]:
        """A new token for an existing Node; the previous one stops working at once."""
        ttl = self.ttl
        seconds = ((request or {}).get("spec") or {}).get("expirationSeconds") if isinstance(request, dict) else None
        if seconds is not None:
            if not isinstance(seconds, int) or isinstance(seconds, bool):
                raise errors.bad_request("spec.expirationSeconds must be an integer")
            ttl = min(max(timedelta(seconds=seconds), MIN_TTL), MAX_TTL)
        token_id = new_token_id()
        patch = with_token_id({"metadata": {}}, token_id)
        await self.repo.patch(NODE, "", name, PATCH_MERGE, patch, WriteOptions())
        token, expires = self.signer.issue(name, token_id, ttl)
        return token_request(token, expires)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, current node token; None when it is not a node token."""
        if token.count(".") != 2:
            return None
        try:
            claims = self.signer.verifier.verify(token, "istiod")
            node = self.index.get(NODE.key, "", claims.node)
            check_current(claims, node.data if node is not None else None)
        except TokenError:
            return None
        return Principal(f"system:node:{claims.node}", NODE_ROLE, ("system:nodes",))
