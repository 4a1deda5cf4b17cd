"""Pricing a call before and after: the worst case to hold, the real cost, and how a cost beyond the
hold is charged."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from server.domain.catalog import ModelSpec, cost_micro
from server.domain.errors import InvalidArgument
from server.domain.holds import RefusalReason, Refused
from server.domain.providers.base import Usage


@dataclass(frozen=True)
class Hold:
    """What to reserve, and the output cap that keeps the real cost within it."""

    amount_micro: int
    max_output: int


def plan_hold(
    spec: ModelSpec,
    credits_per_usd: Decimal,
    prompt_tokens: int,
    requested_output: int | None,
    spendable_micro: int | None,
    default_output: int,
) -> Hold:
    """The worst case of this call: the prompt estimate plus the most output it may produce.

    A request that names `max_tokens` holds for exactly that. One that does not is capped at
    `default_output` tokens, or less when the caller cannot afford that many (`spendable_micro`;
    None when not known yet), and the cap is sent upstream: the bill can never exceed the hold, and
    nobody is refused for a limit they did not ask for.
    """
    room = spec.context_window - prompt_tokens
    if room < 1:
        raise InvalidArgument(
            f"This request needs about {prompt_tokens} tokens; "
            f"{spec.id} takes at most {spec.context_window}.",
            param="messages",
            reason="CONTEXT_LENGTH_EXCEEDED",
        )
    prompt_micro = cost_micro(
        spec, credits_per_usd, input_tokens=prompt_tokens, cached_tokens=0, output_tokens=0
    )
    per_output = spec.prices.output * credits_per_usd
    if requested_output is not None:
        max_output = min(requested_output, spec.max_output, room)
    else:
        affordable = (
            int(((spendable_micro - prompt_micro) / per_output).to_integral_value(rounding=ROUND_FLOOR))
            if per_output > 0 and spendable_micro is not None
            else spec.max_output
        )
        max_output = min(spec.max_output, room, affordable, default_output)
        if max_output < 1:
            raise Refused(RefusalReason.BALANCE).error()
    amount = cost_micro(
        spec, credits_per_usd, input_tokens=prompt_tokens, cached_tokens=0, output_tokens=max_output
    )
    return Hold(amount_micro=amount, max_output=max_output)


def bill(spec: ModelSpec, credits_per_usd: Decimal, usage: Usage) -> int:
    """The real cost of `usage` in micro-credits."""
    return cost_micro(
        spec,
        credits_per_usd,
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens,
    )


@dataclass(frozen=True)
class Charge:
    """What a call is billed in all, and what it cost beyond anything that could be billed."""

    billed_micro: int
    unbilled_micro: int


def charge(held_micro: int, cost_micro: int, key_room_micro: int | None, balance_micro: int) -> Charge:
    """Split a call's real cost `cost_micro`, given what was held for it.

    Within the hold the cost is billed whole (the rest of the hold goes back). Beyond it, the excess
    is billed as far as the key's quota room (`key_room_micro`, quota minus used, which already counts
    the hold; None: no quota) and the account's balance (which already paid the hold) still cover,
    never below zero; what neither covers is unbilled, to be counted rather than dropped.
    """
    cost = max(0, cost_micro)
    if cost <= held_micro:
        return Charge(billed_micro=cost, unbilled_micro=0)
    excess = cost - held_micro
    room = max(0, balance_micro) if key_room_micro is None else max(0, min(key_room_micro, balance_micro))
    extra = min(excess, room)
    return Charge(billed_micro=held_micro + extra, unbilled_micro=excess - extra)
