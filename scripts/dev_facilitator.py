"""A development x402 facilitator: it verifies payments for real (offline: amount, recipient, asset,
validity window, EIP-3009 signature) and "settles" them on a stand-in chain (`scripts.dev_chain`),
answering with a clearly fake transaction hash (it starts 0xdeadbeef). The same server answers that
chain's JSON-RPC at `/rpc`, so the gateway can look settlements up as it would on a real chain.
Nothing touches a real chain.

    python -m scripts.dev_facilitator --port 8402
    export X402_PAY_TO=0x... X402_FACILITATOR_URL=http://127.0.0.1:8402
    X402_RPC_URL=http://127.0.0.1:8402/rpc make run

Production uses a real facilitator URL (and a real RPC endpoint) instead.

For tests it can misbehave as facilitators do in production: answer after the caller's timeout
(having settled), hold its answer until told, drop a settle (never settling), or claim a nonce was
used without settling.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scripts.dev_chain import FAKE_TX_PREFIX, DevChain, NonceUsed
from server.domain.errors import InvalidArgument
from server.domain.payments.check import PaymentRejected, check, decode_payload
from server.domain.payments.offer import NETWORKS, USDC_DECIMALS, Offer, network_name

__all__ = ["FAKE_TX_PREFIX", "DevFacilitator"]


def offer_from_requirements(version: int, requirements: dict[str, Any]) -> Offer:
    """The offer a payment must match, from the requirements the resource server sends."""
    network = network_name(str(requirements["network"]))
    amount = requirements["maxAmountRequired"] if version == 1 else requirements["amount"]
    extra = requirements.get("extra") or {}
    return Offer(
        network=network,
        asset=requirements["asset"],
        pay_to=requirements["payTo"],
        amount_usd=Decimal(int(amount)) / 10**USDC_DECIMALS,
        resource=str(requirements.get("resource", "")),
        token_name=str(extra.get("name", NETWORKS[network][2])),
        token_version=str(extra.get("version", "2")),
    )


class DevFacilitator:
    """`/verify`, `/settle`, `/supported` and the chain's `/rpc`, with switches for tests."""

    def __init__(self, chain: DevChain | None = None) -> None:
        self.chain = chain or DevChain()
        #: Every call answers 503 (a facilitator that is down).
        self.failing = False
        #: Wait this long before handling any call (a slow facilitator: nothing done yet).
        self.delay_seconds = 0.0
        #: Settle on chain, then wait this long before answering (the answer lost to a timeout).
        self.answer_late_seconds = 0.0
        #: When set, settle on chain, then answer only once it is set (an answer held mid-flight).
        self.hold_answer: threading.Event | None = None
        #: Wait this long and answer 504 without settling (a settle dropped before the chain).
        self.drop_settle_seconds = 0.0
        #: Answer "nonce already used" without settling, whatever the chain says.
        self.claim_nonce_used = False
        self.calls: list[str] = []
        #: The local port each settle came from (a test can tell which process asked).
        self.settle_ports: list[int] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/rpc"

    def reset(self) -> None:
        """Behave again (the chain keeps what it recorded)."""
        self.failing, self.delay_seconds, self.answer_late_seconds = False, 0.0, 0.0
        self.drop_settle_seconds, self.claim_nonce_used = 0.0, False
        if self.hold_answer is not None:
            self.hold_answer.set()
        self.hold_answer = None

    def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        version = int(body.get("x402Version", 1))
        try:
            presented = decode_payload(body["paymentPayload"], version)
            check(presented, offer_from_requirements(version, body["paymentRequirements"]))
        except (PaymentRejected, InvalidArgument, KeyError, ValueError) as error:
            reason = getattr(error, "reason", type(error).__name__)
            return {"isValid": False, "invalidReason": str(reason).lower(), "payer": ""}
        return {"isValid": True, "invalidReason": None, "payer": presented.payer}

    def settle(self, body: dict[str, Any]) -> dict[str, Any]:
        verdict = self.verify(body)
        requirements = body.get("paymentRequirements", {})
        network = requirements.get("network", "")
        refused = {"success": False, "transaction": "", "network": network}
        if not verdict["isValid"]:
            return {**refused, "errorReason": verdict["invalidReason"]}
        if self.claim_nonce_used:
            return {**refused, "errorReason": "nonce_already_used"}
        presented = decode_payload(body["paymentPayload"], int(body.get("x402Version", 1)))
        try:
            tx = self.chain.transfer_with_authorization(
                str(requirements["asset"]), presented.payer, presented.to, presented.value, presented.nonce
            )
        except NonceUsed:
            return {**refused, "errorReason": "nonce_already_used"}
        return {"success": True, "transaction": tx, "network": network, "payer": presented.payer}

    @contextmanager
    def running(self, port: int = 0) -> Iterator[DevFacilitator]:
        facilitator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/supported":
                    self.answer(404, {"error": "not found"})
                    return
                kinds = [{"x402Version": 1, "scheme": "exact", "network": name} for name in NETWORKS]
                kinds += [
                    {"x402Version": 2, "scheme": "exact", "network": f"eip155:{NETWORKS[n][0]}"}
                    for n in NETWORKS
                ]
                self.answer(200, {"kinds": kinds})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if self.path == "/rpc":
                    self.answer(200, facilitator.chain.answer(body))
                    return
                facilitator.calls.append(self.path)
                if facilitator.delay_seconds:
                    time.sleep(facilitator.delay_seconds)
                if facilitator.failing:
                    self.answer(503, {"error": "facilitator down"})
                elif self.path == "/verify":
                    self.answer(200, facilitator.verify(body))
                elif self.path == "/settle":
                    self.settle(body)
                else:
                    self.answer(404, {"error": "not found"})

            def settle(self, body: dict[str, Any]) -> None:
                facilitator.settle_ports.append(int(self.client_address[1]))
                if facilitator.drop_settle_seconds:
                    time.sleep(facilitator.drop_settle_seconds)
                    self.answer(504, {"error": "settle dropped"})
                    return
                held, late = facilitator.hold_answer, facilitator.answer_late_seconds
                result = facilitator.settle(body)
                if held is not None:
                    held.wait(60)
                if late:
                    time.sleep(late)
                self.answer(200, result)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8402)
    args = parser.parse_args()
    with DevFacilitator().running(args.port) as facilitator:
        print(
            f"development x402 facilitator (fake settlements) on {facilitator.url}; "
            f"its stand-in chain's JSON-RPC on {facilitator.rpc_url}; Ctrl-C to stop",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
