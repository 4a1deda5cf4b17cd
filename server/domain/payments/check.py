"""Checking a presented x402 payment offline against exactly what was offered: scheme, network,
asset, recipient, amount, validity window and the EIP-3009 signature (recovered to `from`)."""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization
from x402.mechanisms.evm.verify import verify_eoa_signature

from server.domain.errors import InvalidArgument
from server.domain.payments.offer import Offer

X_PAYMENT = "x-payment"
PAYMENT_SIGNATURE = "payment-signature"


class PaymentRejected(Exception):
    """The payment does not match the offer; `reason` is an AIP-193 style code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Presented:
    """A decoded payment: its version, what it authorises, and the raw payload for the facilitator."""

    version: int
    network: str
    payer: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: str
    signature: str
    payload: dict[str, Any]
    scheme: str
    accepted: dict[str, Any]


def decode(header_value: str, header_name: str) -> Presented:
    """Parse an `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2) header; 400 when it is malformed."""
    try:
        data = json.loads(base64.b64decode(header_value.strip(), validate=True))
    except (binascii.Error, ValueError):
        data = None
    return decode_payload(data, 2 if header_name == PAYMENT_SIGNATURE else 1, header_name)


def decode_payload(data: Any, default_version: int, source: str = "payment") -> Presented:
    """A payment payload (decoded JSON) as `Presented`; 400 when it is not one."""
    try:
        version = int(data.get("x402Version", default_version))
        inner = data["payload"]
        authorization = inner["authorization"]
        if version == 1:
            scheme, network, accepted = str(data["scheme"]), str(data["network"]), {}
        else:
            accepted = dict(data["accepted"])
            scheme, network = str(accepted["scheme"]), str(accepted["network"])
        return Presented(
            version=version,
            network=network,
            payer=str(authorization["from"]),
            to=str(authorization["to"]),
            value=int(authorization["value"]),
            valid_after=int(authorization["validAfter"]),
            valid_before=int(authorization["validBefore"]),
            nonce=str(authorization["nonce"]).lower(),
            signature=str(inner["signature"]),
            payload=data,
            scheme=scheme,
            accepted=accepted,
        )
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidArgument(
            f"the {source.upper()} header is not a base64 JSON x402 payment", reason="MALFORMED_PAYMENT"
        ) from None


def check(presented: Presented, offer: Offer, now: float | None = None) -> None:
    """Raise PaymentRejected unless the payment is exactly the offer, in time, signed by `from`."""
    check_window(presented, now)
    check_terms(presented, offer)


def check_window(presented: Presented, now: float | None = None) -> None:
    """Raise PaymentRejected unless the authorisation may be used now."""
    moment = int(time.time() if now is None else now)
    if presented.valid_before <= moment:
        raise PaymentRejected("PAYMENT_EXPIRED", "the authorisation has expired")
    if presented.valid_after > moment:
        raise PaymentRejected("PAYMENT_NOT_YET_VALID", "the authorisation is not valid yet")


def check_terms(presented: Presented, offer: Offer) -> None:
    """Raise PaymentRejected unless the payment is exactly the offer and signed by `from` (at any time)."""
    network = offer.network if presented.version == 1 else offer.caip2
    if presented.scheme != "exact":
        raise PaymentRejected("PAYMENT_SCHEME_MISMATCH", "only the `exact` scheme is accepted")
    if presented.network != network:
        raise PaymentRejected(
            "PAYMENT_NETWORK_MISMATCH", f"the payment is for {presented.network}, not {network}"
        )
    if presented.version == 2:
        accepted = presented.accepted
        if str(accepted.get("asset", "")).lower() != offer.asset.lower():
            raise PaymentRejected("PAYMENT_ASSET_MISMATCH", "the payment is in another asset")
        if str(accepted.get("payTo", "")).lower() != offer.pay_to.lower():
            raise PaymentRejected("PAYMENT_RECIPIENT_MISMATCH", "the payment is to another address")
    if presented.to.lower() != offer.pay_to.lower():
        raise PaymentRejected("PAYMENT_RECIPIENT_MISMATCH", "the authorisation pays another address")
    if presented.value != offer.amount_atomic:
        raise PaymentRejected(
            "PAYMENT_AMOUNT_MISMATCH",
            f"the authorisation is for {presented.value}, not {offer.amount_atomic}",
        )
    authorization = ExactEIP3009Authorization(
        from_address=presented.payer,
        to=presented.to,
        value=str(presented.value),
        valid_after=str(presented.valid_after),
        valid_before=str(presented.valid_before),
        nonce=presented.nonce,
    )
    try:
        digest = hash_eip3009_authorization(
            authorization, offer.chain_id, offer.asset, offer.token_name, offer.token_version
        )
        valid = verify_eoa_signature(
            digest, bytes.fromhex(presented.signature.removeprefix("0x")), presented.payer
        )
    except ValueError:
        valid = False
    if not valid:
        raise PaymentRejected("PAYMENT_SIGNATURE_INVALID", "the signature does not recover to the payer")
