"""Credits: integer micro-credits inside, JSON numbers at the edge.

One credit is 1,000,000 micro-credits. Amounts are stored and added as integers; only the wire
format (protobuf `double`, which the transcoder prints as a JSON number) sees a float.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from server.domain.errors import InvalidArgument

MICRO_PER_CREDIT = 1_000_000


def micro_to_credits(micro: int) -> Decimal:
    """Exact credits for an amount of micro-credits."""
    return Decimal(micro) / MICRO_PER_CREDIT


def micro_to_wire(micro: int) -> float:
    """Credits as the JSON number the API shows (display only; exact to the micro-credit)."""
    return float(micro_to_credits(micro))


def credits_to_micro(value: float | int | str | Decimal, *, param: str) -> int:
    """Parse a credit amount from a request, refusing what cannot be represented exactly."""
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidArgument(f"{param} must be a number", param=param) from None
    if not amount.is_finite():
        raise InvalidArgument(f"{param} must be a finite number", param=param)
    micro = amount * MICRO_PER_CREDIT
    if micro != micro.to_integral_value():
        raise InvalidArgument(f"{param} has more than 6 decimal places", param=param)
    return int(micro)
