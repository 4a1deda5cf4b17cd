"""The pure money rules, fast (no Envoy, no database): what a call costs, what to hold for it, how a
cost beyond the hold is split, and credit conversions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.catalog import DEFAULT_CATALOG, ModelSpec, cost_micro, load_catalog_file
from server.domain.chat.billing import Charge, Hold, bill, charge, plan_hold
from server.domain.credits import credits_to_micro, micro_to_credits, micro_to_wire
from server.domain.errors import InvalidArgument, PaymentRequired
from server.domain.holds import REFUSAL_MESSAGES, RefusalReason
from server.domain.providers.base import Usage

SPECS = {spec.id: spec for spec in load_catalog_file(DEFAULT_CATALOG).models}
MINI = SPECS["openai/gpt-5-mini"]  # 0.25 USD/M in, 0.025 cached, 2.00 out; 400k context, 128k output
PER_USD = Decimal(1000)
DEFAULT_OUTPUT = 16_384


def priced(input_usd: str, cached_usd: str, output_usd: str) -> ModelSpec:
    return MINI.model_copy(
        update={
            "prices": MINI.prices.model_copy(
                update={
                    "input": Decimal(input_usd),
                    "cached_input": Decimal(cached_usd),
                    "output": Decimal(output_usd),
                }
            )
        }
    )


# What a call costs.


def test_cost_is_tokens_times_price_in_micro_credits() -> None:
    # 1000 credits per USD: 0.25 USD/M input is 250 micro-credits a token, 2.00 USD/M output 2000.
    assert cost_micro(MINI, PER_USD, input_tokens=20, cached_tokens=0, output_tokens=5) == 20 * 250 + 5 * 2000


def test_cached_input_is_priced_at_the_cached_rate_and_never_twice() -> None:
    assert (
        cost_micro(MINI, PER_USD, input_tokens=100, cached_tokens=40, output_tokens=0) == 60 * 250 + 40 * 25
    )


def test_a_fraction_of_a_micro_credit_rounds_up() -> None:
    spec = priced("0.0001", "0", "0")  # a tenth of a micro-credit per token
    assert cost_micro(spec, PER_USD, input_tokens=1, cached_tokens=0, output_tokens=0) == 1
    assert cost_micro(spec, PER_USD, input_tokens=10, cached_tokens=0, output_tokens=0) == 1
    assert cost_micro(spec, PER_USD, input_tokens=11, cached_tokens=0, output_tokens=0) == 2


def test_bill_is_the_cost_of_the_reported_usage() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=300, cached_tokens=200)
    assert bill(MINI, PER_USD, usage) == cost_micro(
        MINI, PER_USD, input_tokens=1_000, cached_tokens=200, output_tokens=300
    )


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7), st.decimals(0, 100, places=3))
def test_cost_is_exact_integer_arithmetic_and_never_below_the_true_amount(
    fresh: int, cached: int, output: int, per_usd: Decimal
) -> None:
    micro = cost_micro(MINI, per_usd, input_tokens=fresh + cached, cached_tokens=cached, output_tokens=output)
    exact = (
        fresh * MINI.prices.input + cached * MINI.prices.cached_input + output * MINI.prices.output
    ) * per_usd
    assert isinstance(micro, int)
    assert exact <= micro < exact + 1


# What to hold.


def test_a_named_max_tokens_holds_exactly_that() -> None:
    hold = plan_hold(
        MINI,
        PER_USD,
        prompt_tokens=100,
        requested_output=50,
        spendable_micro=None,
        default_output=DEFAULT_OUTPUT,
    )
    assert hold == Hold(amount_micro=100 * 250 + 50 * 2000, max_output=50)


def test_a_named_max_tokens_is_capped_by_the_models_limit_and_the_context_left() -> None:
    over_limit = plan_hold(MINI, PER_USD, 100, 10**6, None, DEFAULT_OUTPUT)
    assert over_limit.max_output == MINI.max_output
    near_the_end = plan_hold(MINI, PER_USD, MINI.context_window - 10, 50, None, DEFAULT_OUTPUT)
    assert near_the_end.max_output == 10


def test_no_max_tokens_holds_the_default_cap_when_credits_are_unknown_or_plenty() -> None:
    assert plan_hold(MINI, PER_USD, 100, None, None, DEFAULT_OUTPUT).max_output == DEFAULT_OUTPUT
    assert plan_hold(MINI, PER_USD, 100, None, 10**12, DEFAULT_OUTPUT).max_output == DEFAULT_OUTPUT


def test_no_max_tokens_fits_the_cap_to_what_the_caller_can_spend() -> None:
    spendable = 100 * 250 + 7 * 2000 + 1999  # the prompt, seven output tokens and not quite an eighth
    hold = plan_hold(MINI, PER_USD, 100, None, spendable, DEFAULT_OUTPUT)
    assert hold == Hold(amount_micro=100 * 250 + 7 * 2000, max_output=7)
    assert hold.amount_micro <= spendable


def test_no_max_tokens_and_no_room_for_one_token_is_refused_with_the_balance_message() -> None:
    with pytest.raises(PaymentRequired) as refused:
        plan_hold(MINI, PER_USD, 100, None, 100 * 250 + 1999, DEFAULT_OUTPUT)
    assert refused.value.reason == "INSUFFICIENT_CREDITS"
    assert refused.value.message == REFUSAL_MESSAGES[RefusalReason.BALANCE]


def test_a_prompt_over_the_context_window_is_a_400_naming_messages() -> None:
    with pytest.raises(InvalidArgument) as invalid:
        plan_hold(MINI, PER_USD, MINI.context_window, 10, None, DEFAULT_OUTPUT)
    assert (invalid.value.param, invalid.value.reason) == ("messages", "CONTEXT_LENGTH_EXCEEDED")


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 300_000), st.none() | st.integers(1, 200_000), st.none() | st.integers(0, 10**10))
def test_a_hold_covers_any_answer_within_its_output_cap(
    prompt: int, requested: int | None, spendable: int | None
) -> None:
    try:
        hold = plan_hold(MINI, PER_USD, prompt, requested, spendable, DEFAULT_OUTPUT)
    except PaymentRequired:
        assert requested is None and spendable is not None
        return
    assert 1 <= hold.max_output <= MINI.max_output
    worst = bill(MINI, PER_USD, Usage(input_tokens=prompt, output_tokens=hold.max_output))
    assert hold.amount_micro == worst, "the hold is the worst case of the prompt and the cap sent upstream"
    if requested is None and spendable is not None:
        assert hold.amount_micro <= spendable, "an unasked-for cap never takes more than the caller has"


# A cost beyond the hold.


def test_a_cost_within_the_hold_is_billed_whole_whatever_the_room() -> None:
    assert charge(held_micro=1_000, cost_micro=600, key_room_micro=0, balance_micro=0) == Charge(600, 0)
    assert charge(held_micro=1_000, cost_micro=1_000, key_room_micro=None, balance_micro=0) == Charge(
        1_000, 0
    )


@pytest.mark.parametrize(
    ("key_room", "balance", "expected"),
    [
        (None, 10_000, Charge(3_000, 0)),  # no quota, balance to spare: billed in full
        (500, 10_000, Charge(1_500, 1_500)),  # the quota's room limits it
        (None, 700, Charge(1_700, 1_300)),  # the balance limits it
        (900, 400, Charge(1_400, 1_600)),  # both: the smaller wins
        (0, 0, Charge(1_000, 2_000)),  # nothing left: only the hold
    ],
)
def test_a_cost_beyond_the_hold_is_billed_as_far_as_the_key_and_account_can_pay(
    key_room: int | None, balance: int, expected: Charge
) -> None:
    assert (
        charge(held_micro=1_000, cost_micro=3_000, key_room_micro=key_room, balance_micro=balance) == expected
    )


def test_a_negative_cost_or_room_never_takes_more_than_the_hold_back_or_bills_below_zero() -> None:
    assert charge(held_micro=1_000, cost_micro=-5, key_room_micro=None, balance_micro=10) == Charge(0, 0)
    assert charge(held_micro=1_000, cost_micro=3_000, key_room_micro=-50, balance_micro=-50) == Charge(
        1_000, 2_000
    )


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9), st.none() | st.integers(0, 10**9), st.integers(0, 10**9))
def test_the_split_bills_every_micro_credit_once_and_never_beyond_the_room(
    held: int, cost: int, key_room: int | None, balance: int
) -> None:
    split = charge(held, cost, key_room, balance)
    room = balance if key_room is None else min(key_room, balance)
    if cost <= held:
        assert split == Charge(cost, 0)
        return
    assert split.billed_micro + split.unbilled_micro == cost, "nothing dropped, nothing counted twice"
    assert held <= split.billed_micro <= held + room, "beyond the hold, never more than the room"
    assert split.unbilled_micro == 0 or split.billed_micro == held + room, (
        "unbilled only once the room is spent"
    )


# Credits.


def test_micro_credits_convert_exactly() -> None:
    assert micro_to_credits(1) == Decimal("0.000001")
    assert micro_to_credits(123_456_789) == Decimal("123.456789")
    assert micro_to_wire(15_000) == 0.015


@pytest.mark.parametrize(
    ("value", "micro"),
    [("1", 1_000_000), (0.1, 100_000), ("0.000001", 1), (25, 25_000_000), (Decimal("2.5"), 2_500_000)],
)
def test_credit_amounts_parse_to_exact_micro_credits(value: str | float | int | Decimal, micro: int) -> None:
    assert credits_to_micro(value, param="amount") == micro


@pytest.mark.parametrize("value", ["0.0000001", "abc", "NaN", "Infinity", 1e-7])
def test_credit_amounts_that_are_not_exact_micro_credits_are_refused(value: str | float) -> None:
    with pytest.raises(InvalidArgument) as refused:
        credits_to_micro(value, param="quotaCredits")
    assert refused.value.param == "quotaCredits"


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 10**15))
def test_micro_credits_round_trip_through_credits(micro: int) -> None:
    assert credits_to_micro(micro_to_credits(micro), param="amount") == micro
