"""A person's usage over the last days, for the dashboard's charts: totals, and one bucket per UTC
day overall, per key and per model. Days without requests are zeros, so every series has one entry
per day of the window and a chart can draw it as it comes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from server.db.models import utcnow
from server.db.repositories.accounts import AccountRepository
from server.db.repositories.usage import DailyBucketRow, UsageRepository
from server.domain.errors import InvalidArgument

DEFAULT_DAYS = 30
MAX_DAYS = 90


@dataclass
class Amounts:
    """Billed usage added up: micro-credits, requests and tokens."""

    billed_micro: int = 0
    request_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, row: DailyBucketRow) -> None:
        self.billed_micro += row.billed_micro
        self.request_count += row.request_count
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens


@dataclass
class Series:
    """One thing's usage over the window: its total and one `Amounts` per day, oldest first."""

    total: Amounts
    daily: list[Amounts]

    @classmethod
    def empty(cls, days: int) -> Series:
        return cls(Amounts(), [Amounts() for _ in range(days)])

    def add(self, index: int, row: DailyBucketRow) -> None:
        self.total.add(row)
        self.daily[index].add(row)


@dataclass(frozen=True)
class KeySeries:
    """A key's usage over the window."""

    key_id: str
    label: str
    prefix: str
    active: bool
    series: Series


@dataclass(frozen=True)
class ModelSeries:
    """A model's usage over the window."""

    provider: str
    model: str
    series: Series


@dataclass(frozen=True)
class UsageReport:
    """An account's usage over `days` UTC days ending today."""

    days: int
    dates: list[date]
    balance_micro: int
    overall: Series
    by_key: list[KeySeries] = field(default_factory=list)
    by_model: list[ModelSeries] = field(default_factory=list)


def window_days(days: int | None) -> int:
    """The number of days asked for, checked: 1 to MAX_DAYS; None means DEFAULT_DAYS."""
    if days is None:
        return DEFAULT_DAYS
    if not 1 <= days <= MAX_DAYS:
        raise InvalidArgument(f"days must be between 1 and {MAX_DAYS}", param="days")
    return days


def build_report(rows: Iterable[DailyBucketRow], days: int, today: date, balance_micro: int) -> UsageReport:
    """Arrange per-day, per-key, per-model rows into dense series (most credits first)."""
    dates = [today - timedelta(days=days - 1 - offset) for offset in range(days)]
    index_of = {day.isoformat(): index for index, day in enumerate(dates)}
    overall = Series.empty(days)
    keys: dict[str, KeySeries] = {}
    models: dict[tuple[str, str], ModelSeries] = {}
    for row in rows:
        index = index_of.get(row.day)
        if index is None:  # a request stamped just before midnight, read just after: not in the window
            continue
        overall.add(index, row)
        key = keys.setdefault(
            row.key_id,
            KeySeries(row.key_id, row.key_label, row.key_prefix, row.key_active, Series.empty(days)),
        )
        key.series.add(index, row)
        model = models.setdefault(
            (row.provider, row.model), ModelSeries(row.provider, row.model, Series.empty(days))
        )
        model.series.add(index, row)

    def by_credits(item: KeySeries | ModelSeries) -> tuple[int, int]:
        return (-item.series.total.billed_micro, -item.series.total.request_count)

    return UsageReport(
        days=days,
        dates=dates,
        balance_micro=balance_micro,
        overall=overall,
        by_key=sorted(keys.values(), key=by_credits),
        by_model=sorted(models.values(), key=by_credits),
    )


class UsageReports:
    """`GET /api/usage`: a signed-in person's usage report."""

    def __init__(
        self,
        accounts: AccountRepository,
        usage: UsageRepository,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._accounts = accounts
        self._usage = usage
        self._clock = clock

    async def for_user(self, user_id: str, days: int | None) -> UsageReport:
        """The report for the person `user_id`; all zeros before they bootstrap."""
        days = window_days(days)
        today = self._clock().astimezone(UTC).date()
        start = today - timedelta(days=days - 1)
        person = await self._accounts.find_person(user_id)
        if person is None:
            return build_report([], days, today, 0)
        since = datetime.combine(start, time.min, tzinfo=UTC)
        rows = await self._usage.daily_buckets(person.account.id, since)
        return build_report(rows, days, today, person.account.balance_micro)
