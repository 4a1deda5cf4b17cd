"""Operator commands over the gRPC-only AdminService.

    python -m scripts.admin grant ACCOUNT_ID CREDITS --idempotency-key K [--reason R]
    python -m scripts.admin account (--account-id ID | --user-id ID | --agent-id ID)
    python -m scripts.admin payments                      # x402 payments whose outcome is in doubt
    python -m scripts.admin settle-payment PAYMENT_ID --tx-hash 0x... --reason "the evidence"
    python -m scripts.admin fail-payment PAYMENT_ID --reason "the evidence"

The administrator token is read from CROSSCOMPUTE_ADMIN_TOKEN, never from the command line.

CREDITS may be negative to revoke. The target defaults to 127.0.0.1:$CROSSCOMPUTE_GRPC_PORT (50051).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from crosscompute.v1 import admin_service_pb2 as pb
from crosscompute.v1 import admin_service_pb2_grpc as pb_grpc

from server.api.metadata import ADMIN_TOKEN_HEADER
from server.domain.credits import credits_to_micro, micro_to_credits
from server.domain.errors import InvalidArgument


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_target = f"127.0.0.1:{os.environ.get('CROSSCOMPUTE_GRPC_PORT', '50051')}"
    parser.add_argument("--target", default=default_target, help="the gRPC server (host:port)")
    commands = parser.add_subparsers(dest="command", required=True)
    grant = commands.add_parser("grant", help="grant (or, negative, revoke) credits")
    grant.add_argument("account_id")
    grant.add_argument("credits", help="a decimal amount, e.g. 25 or -2.5")
    grant.add_argument("--idempotency-key", required=True, help="the same key never grants twice")
    grant.add_argument("--reason", default="")
    account = commands.add_parser("account", help="look an account up")
    names = account.add_mutually_exclusive_group(required=True)
    names.add_argument("--account-id", default="")
    names.add_argument("--user-id", default="")
    names.add_argument("--agent-id", default="")
    commands.add_parser("payments", help="list the x402 payments whose outcome is in doubt")
    settle = commands.add_parser("settle-payment", help="credit a payment in doubt once, by its transaction")
    settle.add_argument("payment_id")
    settle.add_argument("--tx-hash", required=True, help="the transaction that paid the gateway")
    settle.add_argument("--reason", required=True, help="the evidence, kept in the audit trail")
    fail = commands.add_parser("fail-payment", help="close a payment in doubt with nothing credited")
    fail.add_argument("payment_id")
    fail.add_argument("--reason", required=True, help="the evidence, kept in the audit trail")
    return parser.parse_args()


def show_payment(payment: pb.Payment) -> None:
    """One payment and its audit trail, for a person."""
    amount = micro_to_credits(payment.credits_micro).normalize()
    print(f"payment {payment.id}: {payment.status}")
    print(f"  account {payment.account_id}, payer {payment.payer}, {amount:f} credits on {payment.network}")
    print(f"  nonce {payment.nonce}")
    if payment.tx_hash:
        print(f"  transaction {payment.tx_hash}")
    if payment.reason:
        print(f"  reason: {payment.reason}")
    for event in payment.events:
        when = event.create_time.ToDatetime().isoformat(timespec="seconds")
        print(f"  {when} {event.from_status or '-'} -> {event.to_status} by {event.actor}: {event.detail}")


def main() -> None:
    args = parse()
    token = os.environ.get("CROSSCOMPUTE_ADMIN_TOKEN", "")
    if not token:
        sys.exit("set CROSSCOMPUTE_ADMIN_TOKEN to the server's administrator token")
    metadata = ((ADMIN_TOKEN_HEADER, token),)
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        try:
            if args.command == "grant":
                result = stub.GrantCredits(
                    pb.GrantCreditsRequest(
                        account_id=args.account_id,
                        amount_micro_credits=credits_to_micro(args.credits, param="credits"),
                        idempotency_key=args.idempotency_key,
                        reason=args.reason,
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                applied = "yes" if result.applied else "no (already granted)"
                print(f"entry: {result.entry_id}\napplied: {applied}")
                print(f"balance: {micro_to_credits(result.balance_micro_credits).normalize():f} credits")
            elif args.command == "payments":
                listed = stub.ListPaymentsInDoubt(
                    pb.ListPaymentsInDoubtRequest(), metadata=metadata, timeout=30
                )
                for payment in listed.payments:
                    show_payment(payment)
                print(f"{len(listed.payments)} payments in doubt")
            elif args.command in {"settle-payment", "fail-payment"}:
                settled = args.command == "settle-payment"
                resolved = stub.ResolvePayment(
                    pb.ResolvePaymentRequest(
                        payment_id=args.payment_id,
                        outcome=pb.ResolvePaymentRequest.OUTCOME_SETTLED
                        if settled
                        else pb.ResolvePaymentRequest.OUTCOME_FAILED,
                        tx_hash=args.tx_hash if settled else "",
                        reason=args.reason,
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                show_payment(resolved.payment)
            else:
                # The three names are a oneof: set only the one given.
                names = {"account_id": args.account_id, "user_id": args.user_id, "agent_id": args.agent_id}
                found = stub.GetAccount(
                    pb.GetAccountRequest(**{name: value for name, value in names.items() if value}),
                    metadata=metadata,
                    timeout=30,
                )
                print(f"account: {found.account_id}\nkind: {found.kind}\nexternal id: {found.external_id}")
                print(f"balance: {micro_to_credits(found.balance_micro_credits).normalize():f} credits")
                print(f"keys: {found.key_count}")
        except InvalidArgument as error:
            sys.exit(error.message)
        except grpc.RpcError as error:
            sys.exit(f"{error.code().name}: {error.details()}")


if __name__ == "__main__":
    main()
