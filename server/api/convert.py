"""Domain rows to protobuf messages (the wire shows credits as JSON numbers).

A field that may have no value is a `google.protobuf.Value` set to JSON null: Envoy's transcoder
leaves an unset field out of the JSON, and clients read what crosscompute.io's registry lists as
always there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crosscompute.v1 import accounts_service_pb2 as accounts_pb
from google.protobuf.struct_pb2 import NULL_VALUE, Value
from google.protobuf.timestamp_pb2 import Timestamp

from server.db.repositories.accounts import AccountRow, KeyRow, ProfileRow
from server.domain.credits import micro_to_wire
from server.domain.usage_report import Amounts, Series, UsageReport


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def nullable_number(value: float | None) -> Value:
    """A JSON number, or JSON null for None."""
    return Value(null_value=NULL_VALUE) if value is None else Value(number_value=value)


def nullable_text(value: str | None) -> Value:
    """A JSON string, or JSON null for None or the empty string (both mean "not set")."""
    return Value(string_value=value) if value else Value(null_value=NULL_VALUE)


def nullable_timestamp(value: datetime | None) -> Value:
    """An RFC 3339 string exactly as a `Timestamp` prints in JSON, or JSON null for None."""
    return nullable_text(timestamp(value).ToJsonString() if value is not None else None)


def quota_credits(key: KeyRow) -> Value:
    """A key's quota in credits, or JSON null when only the account balance limits it."""
    return nullable_number(None if key.quota_micro is None else micro_to_wire(key.quota_micro))


def remaining_micro(key: KeyRow) -> int:
    """What a key may still spend: its quota left, capped by the account balance."""
    if key.quota_micro is None:
        return key.account_balance_micro
    return max(0, min(key.quota_micro - key.used_micro, key.account_balance_micro))


def key_fields(key: KeyRow) -> dict[str, Any]:
    """The fields a person's `ApiKey` and an agent's `AgentKey` share."""
    return {
        "id": key.id,
        "label": key.label,
        "prefix": key.prefix,
        "quota_credits": quota_credits(key),
        "used_credits": micro_to_wire(key.used_micro),
        "remaining_credits": micro_to_wire(remaining_micro(key)),
        "active": key.active,
    }


def api_key(key: KeyRow) -> accounts_pb.ApiKey:
    return accounts_pb.ApiKey(
        **key_fields(key),
        created_at=timestamp(key.created_at),
        last_used_at=nullable_timestamp(key.last_used_at),
    )


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


def _amount_fields(amounts: Amounts) -> dict[str, Any]:
    """The fields `UsageTotals` and `DailyUsage` share."""
    return {
        "credits": micro_to_wire(amounts.billed_micro),
        "request_count": amounts.request_count,
        "input_tokens": amounts.input_tokens,
        "output_tokens": amounts.output_tokens,
    }


def usage_totals(amounts: Amounts) -> accounts_pb.UsageTotals:
    return accounts_pb.UsageTotals(**_amount_fields(amounts))


def daily_usage(report: UsageReport, series: Series) -> list[accounts_pb.DailyUsage]:
    """One entry per day of the report's window, oldest first."""
    return [
        accounts_pb.DailyUsage(date=day.isoformat(), **_amount_fields(amounts))
        for day, amounts in zip(report.dates, series.daily, strict=True)
    ]


def usage_report(report: UsageReport) -> accounts_pb.GetAccountUsageResponse:
    return accounts_pb.GetAccountUsageResponse(
        ok=True,
        days=report.days,
        start_date=report.dates[0].isoformat(),
        end_date=report.dates[-1].isoformat(),
        balance_credits=micro_to_wire(report.balance_micro),
        totals=usage_totals(report.overall.total),
        daily=daily_usage(report, report.overall),
        by_key=[
            accounts_pb.KeyUsageSeries(
                key_id=key.key_id,
                label=key.label,
                prefix=key.prefix,
                active=key.active,
                totals=usage_totals(key.series.total),
                daily=daily_usage(report, key.series),
            )
            for key in report.by_key
        ],
        by_model=[
            accounts_pb.ModelUsageSeries(
                provider=model.provider,
                model=model.model,
                totals=usage_totals(model.series.total),
                daily=daily_usage(report, model.series),
            )
            for model in report.by_model
        ],
    )
