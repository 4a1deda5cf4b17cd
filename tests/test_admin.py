"""AdminService over gRPC only: token-guarded grants and revocations with idempotency keys, account
lookups, and the command in scripts/ that calls it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from crosscompute.v1 import admin_service_pb2 as pb
from crosscompute.v1 import admin_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import ADMIN_TOKEN
from tests.support.db import query
from tests.support.gateway import Gateway
from tests.support.people import sign_in
from tests.support.supabase import SupabaseStandIn

ROOT = Path(__file__).resolve().parent.parent
AUTHORISED = (("x-crosscompute-admin-token", ADMIN_TOKEN),)


@pytest.fixture
async def admin(gateway: Gateway) -> AsyncIterator[pb_grpc.AdminServiceAsyncStub]:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        yield pb_grpc.AdminServiceStub(channel)


@pytest.fixture
def account_id(gateway: Gateway, supabase: SupabaseStandIn) -> str:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        person = sign_in(gateway, supabase, client)
        return str(person.bootstrap()["account"]["id"])


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [((), "MISSING_ADMIN_TOKEN"), ((("x-crosscompute-admin-token", "guess"),), "INVALID_ADMIN_TOKEN")],
)
async def test_calls_without_the_admin_token_are_refused(
    admin: pb_grpc.AdminServiceAsyncStub, account_id: str, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await admin.GrantCredits(
            pb.GrantCreditsRequest(account_id=account_id, amount_micro_credits=1, idempotency_key="x"),
            metadata=metadata,
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(raised.value).reason == reason


async def test_a_grant_applies_once_per_idempotency_key(
    admin: pb_grpc.AdminServiceAsyncStub, account_id: str, gateway: Gateway
) -> None:
    request = pb.GrantCreditsRequest(
        account_id=account_id,
        amount_micro_credits=25_000_000,
        idempotency_key=f"promo:{account_id}",
        reason="promo",
    )
    first = await admin.GrantCredits(request, metadata=AUTHORISED)
    again = await admin.GrantCredits(request, metadata=AUTHORISED)
    assert (first.applied, again.applied) == (True, False)
    assert first.entry_id == again.entry_id
    assert first.balance_micro_credits == again.balance_micro_credits == 125_000_000

    revoked = await admin.GrantCredits(
        pb.GrantCreditsRequest(
            account_id=account_id, amount_micro_credits=-5_000_000, idempotency_key=f"fix:{account_id}"
        ),
        metadata=AUTHORISED,
    )
    assert revoked.balance_micro_credits == 120_000_000
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.GrantCredits(
            pb.GrantCreditsRequest(
                account_id=account_id,
                amount_micro_credits=-121_000_000,
                idempotency_key=f"too-much:{account_id}",
            ),
            metadata=AUTHORISED,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(refused.value).reason == "INSUFFICIENT_CREDITS"

    balance = query(gateway.settings, "SELECT balance_micro FROM accounts WHERE id = :id", id=account_id)
    ledger = query(
        gateway.settings,
        "SELECT SUM(amount_micro) AS total FROM ledger_entries WHERE account_id = :id",
        id=account_id,
    )
    assert balance[0]["balance_micro"] == int(ledger[0]["total"]) == 120_000_000


async def test_bad_grants_are_invalid_and_unknown_accounts_not_found(
    admin: pb_grpc.AdminServiceAsyncStub, account_id: str
) -> None:
    for request in (
        pb.GrantCreditsRequest(account_id=account_id, amount_micro_credits=0, idempotency_key="zero"),
        pb.GrantCreditsRequest(account_id=account_id, amount_micro_credits=5, idempotency_key=""),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin.GrantCredits(request, metadata=AUTHORISED)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.GetAccount(pb.GetAccountRequest(account_id="no-such-account"), metadata=AUTHORISED)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(missing.value)
    assert (info.reason, info.domain) == ("ACCOUNT_NOT_FOUND", "crosscompute.io")


async def test_accounts_are_found_by_id_or_user_id(
    admin: pb_grpc.AdminServiceAsyncStub, account_id: str, gateway: Gateway
) -> None:
    by_id = await admin.GetAccount(pb.GetAccountRequest(account_id=account_id), metadata=AUTHORISED)
    assert (by_id.kind, by_id.key_count, by_id.balance_micro_credits) == ("person", 1, 100_000_000)
    by_user = await admin.GetAccount(pb.GetAccountRequest(user_id=by_id.external_id), metadata=AUTHORISED)
    assert by_user.account_id == account_id


def test_the_admin_command_grants_and_looks_up(gateway: Gateway, account_id: str) -> None:
    env = {**os.environ, "CROSSCOMPUTE_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [sys.executable, "-m", "scripts.admin", "--target", gateway.grpc_target]
    granted = subprocess.run(
        [
            *command,
            "grant",
            account_id,
            "2.5",
            "--idempotency-key",
            f"cli:{account_id}",
            "--reason",
            "support",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert granted.returncode == 0, granted.stderr
    assert "applied: yes" in granted.stdout and "balance: 102.5 credits" in granted.stdout
    shown = subprocess.run(
        [*command, "account", "--account-id", account_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "balance: 102.5 credits" in shown.stdout and "keys: 1" in shown.stdout
    refused = subprocess.run(
        [*command, "account", "--account-id", account_id],
        cwd=ROOT,
        env={**env, "CROSSCOMPUTE_ADMIN_TOKEN": "wrong"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "UNAUTHENTICATED" in refused.stderr and "wrong" not in refused.stderr
