"""Accounts, profiles and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, ApiKey, LedgerEntry, Profile, UsageRecord, as_utc, utcnow
from server.db.notifications import KEY_REVOKED_CHANNEL
from server.db.repositories.ledger import LedgerRepository
from server.domain.api_keys import NewKey
from server.domain.errors import Conflict

#: `last_used_at` is written at most this often per key, so using a key is not a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class AccountRow:
    """An account's balances."""

    id: str
    kind: str
    external_id: str
    balance_micro: int
    granted_micro: int
    purchased_micro: int
    used_micro: int
    created_at: datetime


@dataclass(frozen=True)
class ProfileRow:
    """A person's profile."""

    user_id: str
    email: str
    display_name: str
    created_at: datetime


@dataclass(frozen=True)
class KeyRow:
    """An API key without its secret, with its account's balance for `remainingCredits`."""

    id: str
    account_id: str
    label: str
    prefix: str
    quota_micro: int | None
    used_micro: int
    active: bool
    created_at: datetime
    last_used_at: datetime | None
    account_balance_micro: int
    secret_digest: str = ""


@dataclass(frozen=True)
class PersonRow:
    """A bootstrapped person: account, profile and how many keys."""

    account: AccountRow
    profile: ProfileRow
    key_count: int


@dataclass(frozen=True)
class Bootstrap:
    """What bootstrap found or made."""

    created: bool
    person: PersonRow
    first_key: KeyRow


def _account(row: Account) -> AccountRow:
    return AccountRow(
        id=row.id,
        kind=row.kind,
        external_id=row.external_id,
        balance_micro=row.balance_micro,
        granted_micro=row.granted_micro,
        purchased_micro=row.purchased_micro,
        used_micro=row.used_micro,
        created_at=as_utc(row.created_at),
    )


def _profile(row: Profile) -> ProfileRow:
    return ProfileRow(
        user_id=row.user_id,
        email=row.email or "",
        display_name=row.display_name or "",
        created_at=as_utc(row.created_at),
    )


def _key(row: ApiKey, balance_micro: int) -> KeyRow:
    return KeyRow(
        id=row.id,
        account_id=row.account_id,
        label=row.label,
        prefix=row.prefix,
        quota_micro=row.quota_micro,
        used_micro=row.used_micro,
        active=row.active,
        created_at=as_utc(row.created_at),
        last_used_at=as_utc(row.last_used_at) if row.last_used_at else None,
        account_balance_micro=balance_micro,
        secret_digest=row.secret_hash,
    )


class AccountRepository:
    """People's accounts and everybody's keys."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def find_person(self, user_id: str) -> PersonRow | None:
        """The bootstrapped person with this Supabase user id, if any."""
        async with self._sessions() as session:
            return await self._person(session, user_id)

    async def bootstrap_person(
        self, user_id: str, email: str, signup_micro: int, first_key: NewKey, label: str
    ) -> Bootstrap:
        """Create account, profile, signup grant and first key in one transaction, or find them.

        Two racing calls cannot both create: the account's (kind, external_id) is unique, so the
        loser's transaction rolls back whole and it reads what the winner made.
        """
        try:
            async with self._sessions.begin() as session:
                account = Account(kind="person", external_id=user_id)
                session.add(account)
                await session.flush()
                session.add(Profile(user_id=user_id, account_id=account.id, email=email or None))
                if signup_micro:
                    balance = await LedgerRepository.move(session, account.id, signup_micro, "grant")
                    session.add(
                        LedgerEntry(
                            account_id=account.id,
                            kind="grant",
                            amount_micro=signup_micro,
                            balance_after_micro=balance,
                            idempotency_key=f"signup:{account.id}",
                            reference="signup grant",
                        )
                    )
                key = ApiKey(
                    account_id=account.id, label=label, prefix=first_key.prefix, secret_hash=first_key.digest
                )
                session.add(key)
                await session.flush()
                person = await self._person(session, user_id)
                assert person is not None
                created_key = _key(key, person.account.balance_micro)
            return Bootstrap(created=True, person=person, first_key=created_key)
        except IntegrityError:
            async with self._sessions() as session:
                person = await self._person(session, user_id)
                if person is None:
                    raise
                keys = await self._keys(session, person.account.id, person.account.balance_micro)
            return Bootstrap(created=False, person=person, first_key=keys[0])

    async def list_keys(self, account_id: str) -> list[KeyRow]:
        """The account's keys, newest first."""
        async with self._sessions() as session:
            balance = await session.scalar(select(Account.balance_micro).where(Account.id == account_id))
            return list(reversed(await self._keys(session, account_id, balance or 0)))

    async def create_key(
        self, account_id: str, new_key: NewKey, label: str, quota_micro: int | None, max_active: int
    ) -> KeyRow:
        """Add a key unless the account already has `max_active` active ones."""
        async with self._sessions.begin() as session:
            # Lock the account row first: concurrent creations for one account take turns, so
            # the cap holds (on SQLite the write lock does the same).
            balance = await session.scalar(
                update(Account)
                .where(Account.id == account_id)
                .values(updated_at=utcnow())
                .returning(Account.balance_micro)
            )
            active = await session.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.account_id == account_id, ApiKey.active)
            )
            if (active or 0) >= max_active:
                raise Conflict(
                    f"an account may have at most {max_active} active keys; deactivate one first",
                    reason="TOO_MANY_KEYS",
                )
            key = ApiKey(
                account_id=account_id,
                label=label,
                prefix=new_key.prefix,
                secret_hash=new_key.digest,
                quota_micro=quota_micro,
            )
            session.add(key)
            await session.flush()
            return _key(key, balance or 0)

    async def deactivate_key(self, account_id: str, key_id: str) -> KeyRow | None:
        """Deactivate the account's key `key_id` (again is harmless); None when it is not theirs."""
        async with self._sessions.begin() as session:
            key = await session.scalar(
                select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id).with_for_update()
            )
            if key is None:
                return None
            if key.active:
                key.active = False
                key.deactivated_at = utcnow()
            if session.get_bind().dialect.name == "postgresql":
                # Delivered to every replica's listener when this transaction commits.
                await session.execute(select(func.pg_notify(KEY_REVOKED_CHANNEL, key.secret_hash)))
            balance = await session.scalar(select(Account.balance_micro).where(Account.id == account_id))
            return _key(key, balance or 0)

    async def key_by_digest(self, secret_digest: str) -> KeyRow | None:
        """The key with this digest (active or not), with its account's balance."""
        return await self._key_where(ApiKey.secret_hash == secret_digest)

    async def key(self, key_id: str) -> KeyRow | None:
        """One key with its account's balance."""
        return await self._key_where(ApiKey.id == key_id)

    async def _key_where(self, condition: ColumnElement[bool]) -> KeyRow | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, Account.balance_micro)
                    .join(Account, Account.id == ApiKey.account_id)
                    .where(condition)
                )
            ).first()
        return None if row is None else _key(row[0], row[1])

    async def touch_key(self, key_id: str) -> None:
        """Record that a key was used (at most once per `LAST_USED_RESOLUTION`)."""
        now = utcnow()
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
                )
                .values(last_used_at=now)
            )

    async def register_agent(
        self, agent_id: str, name: str, skill_md_url: str, new_key: NewKey, label: str
    ) -> tuple[bool, AccountRow, KeyRow]:
        """Create the agent's account and first key in one transaction, or find them (created False)."""
        try:
            async with self._sessions.begin() as session:
                account = Account(
                    kind="agent",
                    external_id=agent_id,
                    display_name=name or None,
                    skill_md_url=skill_md_url or None,
                )
                session.add(account)
                await session.flush()
                key = ApiKey(
                    account_id=account.id, label=label, prefix=new_key.prefix, secret_hash=new_key.digest
                )
                session.add(key)
                await session.flush()
                return True, _account(account), _key(key, account.balance_micro)
        except IntegrityError:
            found = await self.agent(agent_id)
            if found is None:
                raise
            return False, found[0], found[1]

    async def agent(self, agent_id: str) -> tuple[AccountRow, KeyRow] | None:
        """An agent's account and its first key."""
        async with self._sessions() as session:
            account = await session.scalar(
                select(Account).where(Account.kind == "agent", Account.external_id == agent_id)
            )
            if account is None:
                return None
            keys = await self._keys(session, account.id, account.balance_micro)
        return _account(account), keys[0]

    async def agent_profile(self, account_id: str) -> tuple[str, str]:
        """An agent's display name and skill file URL."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(Account.display_name, Account.skill_md_url).where(Account.id == account_id)
                )
            ).one()
        return row[0] or "", row[1] or ""

    async def update_agent(self, account_id: str, name: str | None, skill_md_url: str | None) -> None:
        """Change an agent's name and/or skill file URL (None leaves a field as it is)."""
        values: dict[str, object] = {}
        if name is not None:
            values["display_name"] = name or None
        if skill_md_url is not None:
            values["skill_md_url"] = skill_md_url or None
        if values:
            async with self._sessions.begin() as session:
                await session.execute(update(Account).where(Account.id == account_id).values(**values))

    async def request_count(self, key_id: str) -> int:
        """Inference requests a key made that were billed (settled)."""
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.key_id == key_id, UsageRecord.status == "settled")
            )
        return count or 0

    async def find_account(
        self, *, account_id: str = "", kind: str = "", external_id: str = ""
    ) -> AccountRow | None:
        """An account by id, or by kind and external id."""
        statement = select(Account)
        if account_id:
            statement = statement.where(Account.id == account_id)
        else:
            statement = statement.where(Account.kind == kind, Account.external_id == external_id)
        async with self._sessions() as session:
            row = await session.scalar(statement)
        return None if row is None else _account(row)

    async def count_keys(self, account_id: str) -> int:
        """How many keys the account has (active or not)."""
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.account_id == account_id)
            )
        return count or 0

    async def _person(self, session: AsyncSession, user_id: str) -> PersonRow | None:
        row = (
            await session.execute(
                select(Account, Profile)
                .join(Profile, Profile.account_id == Account.id)
                .where(Account.kind == "person", Account.external_id == user_id)
            )
        ).first()
        if row is None:
            return None
        count = await session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.account_id == row[0].id)
        )
        return PersonRow(account=_account(row[0]), profile=_profile(row[1]), key_count=count or 0)

    async def _keys(self, session: AsyncSession, account_id: str, balance_micro: int) -> list[KeyRow]:
        rows = await session.scalars(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at, ApiKey.id)
        )
        return [_key(row, balance_micro) for row in rows]
