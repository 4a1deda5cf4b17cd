"""`GET /api/usage`: a person's usage per UTC day, key and model, from storage (SQLite and
PostgreSQL) to the JSON the dashboard draws."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import ApiKey, UsageRecord
from server.db.repositories import AccountRepository
from server.db.repositories.usage import UsageRepository
from server.domain.api_keys import KeyKind, make_key
from server.domain.errors import InvalidArgument
from server.domain.usage_report import DEFAULT_DAYS, MAX_DAYS, UsageReports, window_days
from tests.support.gateway import Gateway
from tests.support.people import sign_in
from tests.support.supabase import SupabaseStandIn

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


async def person_with_two_keys(sessions: async_sessionmaker[AsyncSession]) -> tuple[str, str, str, str]:
    """A bootstrapped person (user id, account id) with its first key and a second, inactive one."""
    accounts = AccountRepository(sessions)
    user_id = str(uuid.uuid4())
    made = await accounts.bootstrap_person(user_id, "", 50_000_000, make_key(KeyKind.LIVE), "Default")
    second = make_key(KeyKind.LIVE)
    async with sessions.begin() as session:
        key = ApiKey(
            account_id=made.person.account.id,
            label="Batch",
            prefix=second.prefix,
            secret_hash=second.digest,
            active=False,
        )
        session.add(key)
        await session.flush()
        second_id = key.id
    return user_id, made.person.account.id, made.first_key.id, second_id


async def add_usage(
    sessions: async_sessionmaker[AsyncSession],
    account_id: str,
    key_id: str,
    created_at: datetime,
    *,
    model: str = "openai/gpt-5-mini",
    billed_micro: int = 1_500_000,
    status: str = "settled",
) -> None:
    call_id = str(uuid.uuid4())
    async with sessions.begin() as session:
        session.add(
            UsageRecord(
                id=call_id,
                request_id=call_id,
                account_id=account_id,
                key_id=key_id,
                status=status,
                requested_model=model,
                model=model,
                provider=model.split("/")[0],
                input_tokens=10,
                output_tokens=5,
                reserved_micro=billed_micro,
                billed_micro=billed_micro if status == "settled" else 0,
                created_at=created_at,
            )
        )


async def test_usage_is_bucketed_per_utc_day_key_and_model(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user_id, account_id, first, second = await person_with_two_keys(sessions)
    await add_usage(sessions, account_id, first, at(21, 23, 59))  # before a 7-day window
    await add_usage(sessions, account_id, first, at(22, 0, 0))  # its first instant
    await add_usage(sessions, account_id, first, at(27, 23, 59))
    await add_usage(sessions, account_id, first, at(28, 0, 1), model="anthropic/claude-sonnet-4-6")
    await add_usage(sessions, account_id, second, at(28, 9), billed_micro=4_000_000)
    await add_usage(sessions, account_id, second, at(28, 10), status="failed")  # billed nothing: left out

    report = await UsageReports(AccountRepository(sessions), UsageRepository(sessions), lambda: NOW).for_user(
        user_id, 7
    )

    assert report.dates[0] == date(2026, 11, 22) and report.dates[-1] == date(2026, 11, 28)
    assert len(report.overall.daily) == 7
    assert [day.request_count for day in report.overall.daily] == [1, 0, 0, 0, 0, 1, 2]
    assert [day.billed_micro for day in report.overall.daily] == [1_500_000, 0, 0, 0, 0, 1_500_000, 5_500_000]
    assert report.overall.total.billed_micro == 8_500_000
    assert report.overall.total.input_tokens == 40 and report.overall.total.output_tokens == 20
    assert report.balance_micro == 50_000_000

    assert [(key.label, key.active, key.series.total.billed_micro) for key in report.by_key] == [
        ("Default", True, 4_500_000),
        ("Batch", False, 4_000_000),
    ]
    assert [(model.model, model.series.total.request_count) for model in report.by_model] == [
        ("openai/gpt-5-mini", 3),
        ("anthropic/claude-sonnet-4-6", 1),
    ]
    assert report.by_model[1].provider == "anthropic"
    assert [day.request_count for day in report.by_model[1].series.daily] == [0, 0, 0, 0, 0, 0, 1]


async def test_another_account_and_a_person_not_yet_bootstrapped_see_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    _user, account_id, first, _second = await person_with_two_keys(sessions)
    await add_usage(sessions, account_id, first, at(28, 8))
    reports = UsageReports(AccountRepository(sessions), UsageRepository(sessions), lambda: NOW)
    other, *_ = await person_with_two_keys(sessions)
    for user_id in (other, str(uuid.uuid4())):
        report = await reports.for_user(user_id, None)
        assert len(report.dates) == DEFAULT_DAYS
        assert report.overall.total.request_count == 0 and report.by_key == [] == report.by_model


@pytest.mark.parametrize("days", [0, -1, MAX_DAYS + 1])
def test_the_window_is_bounded(days: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        window_days(days)
    assert raised.value.param == "days"
    assert window_days(None) == DEFAULT_DAYS and window_days(MAX_DAYS) == MAX_DAYS


def test_usage_over_http_after_a_chat(
    gateway: Gateway, supabase: SupabaseStandIn, http: httpx.Client
) -> None:
    person = sign_in(gateway, supabase, http)
    empty = person.get("/api/usage?days=3")
    assert empty.status_code == 200, empty.text
    assert empty.json()["byKey"] == [] and len(empty.json()["daily"]) == 3

    key = person.bootstrap()["apiKey"]
    chat = http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "crosscompute/simulator", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert chat.status_code == 200, chat.text

    body = person.get("/api/usage?days=2").json()
    today = datetime.now(UTC).date().isoformat()
    assert body["ok"] is True and body["days"] == 2 and body["endDate"] == today
    assert body["balanceCredits"] == 100
    assert body["totals"]["requestCount"] == 1 and body["totals"]["credits"] == 0
    assert [day["date"] for day in body["daily"]][-1] == today
    assert set(body["daily"][0]) == {"date", "credits", "requestCount", "inputTokens", "outputTokens"}
    (series,) = body["byKey"]
    assert series["label"] == "Default" and series["prefix"] == key[:16] and series["active"] is True
    assert [day["requestCount"] for day in series["daily"]] == [0, 1]
    (model,) = body["byModel"]
    assert (model["provider"], model["model"]) == ("simulator", "crosscompute/simulator")
    assert person.get("/api/usage").json()["days"] == DEFAULT_DAYS


@pytest.mark.parametrize("query", ["days=0", "days=91", "days=-3", "days=abc", "days=1.5"])
def test_a_bad_window_is_400_in_the_api_shape(
    gateway: Gateway, supabase: SupabaseStandIn, http: httpx.Client, query: str
) -> None:
    response = sign_in(gateway, supabase, http).get(f"/api/usage?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["ok"] is False and set(body["error"]) == {"code", "message"}
    assert "days" in body["error"]["message"]


def test_usage_needs_a_signed_in_person(http: httpx.Client) -> None:
    response = http.get("/api/usage")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "MISSING_CREDENTIALS"
