"""AccountsService: `/api/me`, `/api/bootstrap-account` and `/api/keys*`, for people signed in."""

from __future__ import annotations

from typing import Any

import grpc
from crosscompute.v1 import accounts_service_pb2 as pb
from crosscompute.v1 import accounts_service_pb2_grpc as pb_grpc

from server.api import convert
from server.api.metadata import bearer_token
from server.domain.accounts import PeopleAccounts
from server.domain.errors import Unauthenticated
from server.domain.supabase_tokens import SignedInUser, SupabaseTokenVerifier
from server.domain.usage_report import UsageReports

Context = grpc.aio.ServicerContext[Any, Any]


class AccountsServicer(pb_grpc.AccountsServiceServicer):
    """Translates between the API's messages and `PeopleAccounts`."""

    def __init__(
        self, verifier: SupabaseTokenVerifier, accounts: PeopleAccounts, usage_reports: UsageReports
    ) -> None:
        self._verifier = verifier
        self._accounts = accounts
        self._usage_reports = usage_reports

    async def _user(self, context: Context) -> SignedInUser:
        token = bearer_token(context)
        if token is None:
            raise Unauthenticated(
                "sign in first: send `Authorization: Bearer <Supabase access token>`",
                reason="MISSING_CREDENTIALS",
            )
        return await self._verifier.verify(token)

    async def GetMe(self, request: pb.GetMeRequest, context: Context) -> pb.GetMeResponse:
        me = await self._accounts.me(await self._user(context))
        response = pb.GetMeResponse(ok=True, user=pb.User(id=me.user.id, email=me.user.email))
        if me.person is not None:
            response.bootstrapped = True
            response.profile.CopyFrom(convert.profile(me.person.profile))
            response.account.CopyFrom(convert.account(me.person.account))
            response.key_count = me.person.key_count
        return response

    async def BootstrapAccount(
        self, request: pb.BootstrapAccountRequest, context: Context
    ) -> pb.BootstrapAccountResponse:
        outcome = await self._accounts.bootstrap(await self._user(context))
        person = outcome.bootstrap.person
        response = pb.BootstrapAccountResponse(
            ok=True,
            created=outcome.bootstrap.created,
            profile=convert.profile(person.profile),
            account=convert.account(person.account),
            key=convert.api_key(outcome.bootstrap.first_key),
        )
        if outcome.secret is not None:
            response.api_key = outcome.secret
        return response

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        keys = await self._accounts.list_keys(await self._user(context))
        return pb.ListApiKeysResponse(ok=True, keys=[convert.api_key(key) for key in keys])

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        quota = request.quota_credits if request.HasField("quota_credits") else None
        created = await self._accounts.create_key(await self._user(context), request.label, quota)
        return pb.CreateApiKeyResponse(ok=True, key=convert.api_key(created.key), api_key=created.secret)

    async def DeactivateApiKey(
        self, request: pb.DeactivateApiKeyRequest, context: Context
    ) -> pb.DeactivateApiKeyResponse:
        key = await self._accounts.deactivate_key(await self._user(context), request.id)
        return pb.DeactivateApiKeyResponse(ok=True, key=convert.api_key(key))

    async def GetAccountUsage(
        self, request: pb.GetAccountUsageRequest, context: Context
    ) -> pb.GetAccountUsageResponse:
        user = await self._user(context)
        days = request.days if request.HasField("days") else None
        return convert.usage_report(await self._usage_reports.for_user(user.id, days))
