"""Stored Responses API answers, each visible to its own account only."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import StoredResponse


@dataclass(frozen=True)
class ResponseRow:
    """One stored response: its conversation (JSON) and the response object as served (JSON)."""

    id: str
    account_id: str
    status: str
    conversation: str
    body: str


class ResponseRepository:
    """Saving, reading and deleting stored responses; every read is by id *and* account."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def save(
        self,
        *,
        response_id: str,
        account_id: str,
        key_id: str,
        status: str,
        model: str,
        previous_response_id: str | None,
        conversation: str,
        body: str,
    ) -> None:
        async with self._sessions.begin() as session:
            session.add(
                StoredResponse(
                    id=response_id,
                    account_id=account_id,
                    key_id=key_id,
                    status=status,
                    model=model,
                    previous_response_id=previous_response_id,
                    conversation=conversation,
                    body=body,
                )
            )

    async def get(self, response_id: str, account_id: str) -> ResponseRow | None:
        """The account's response `response_id`, or None (another account's is None too)."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(StoredResponse).where(
                    StoredResponse.id == response_id, StoredResponse.account_id == account_id
                )
            )
            if row is None:
                return None
            return ResponseRow(row.id, row.account_id, row.status, row.conversation, row.body)

    async def delete(self, response_id: str, account_id: str) -> bool:
        """Delete the account's response `response_id`; False when it has none by that id."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(StoredResponse).where(
                    StoredResponse.id == response_id, StoredResponse.account_id == account_id
                )
            )
            return bool(getattr(result, "rowcount", 0))
