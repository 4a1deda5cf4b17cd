"""Domain rows to protobuf messages (the wire shows credits as JSON numbers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crosscompute.v1 import accounts_service_pb2 as accounts_pb
from google.protobuf.timestamp_pb2 import Timestamp

from server.db.repositories.accounts import AccountRow, KeyRow, ProfileRow
from server.domain.credits import micro_to_wire


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def remaining_micro(key: KeyRow) -> int:
    """What a key may still spend: its quota left, capped by the account balance."""
    if key.quota_micro is None:
        return key.account_balance_micro
    return max(0, min(key.quota_micro - key.used_micro, key.account_balance_micro))


def key_fields(key: KeyRow) -> dict[str, Any]:
    """The fields a person's `ApiKey` and an agent's `AgentKey` share."""
    fields: dict[str, Any] = {
        "id": key.id,
        "label": key.label,
        "prefix": key.prefix,
        "used_credits": micro_to_wire(key.used_micro),
        "remaining_credits": micro_to_wire(remaining_micro(key)),
        "active": key.active,
    }
    if key.quota_micro is not None:
        fields["quota_credits"] = micro_to_wire(key.quota_micro)
    return fields


def api_key(key: KeyRow) -> accounts_pb.ApiKey:
    message = accounts_pb.ApiKey(**key_fields(key), created_at=timestamp(key.created_at))
    if key.last_used_at is not None:
        message.last_used_at.CopyFrom(timestamp(key.last_used_at))
    return message


def account(row: AccountRow) -> accounts_pb.Account:
    return accounts_pb.Account(
        id=row.id,
        kind=row.kind,
        balance_credits=micro_to_wire(row.balance_micro),
        granted_credits=micro_to_wire(row.granted_micro),
        purchased_credits=micro_to_wire(row.purchased_micro),
        used_credits=micro_to_wire(row.used_micro),
        created_at=timestamp(row.created_at),
    )


def profile(row: ProfileRow) -> accounts_pb.Profile:
    return accounts_pb.Profile(
        user_id=row.user_id,
        email=row.email,
        display_name=row.display_name,
        created_at=timestamp(row.created_at),
    )
