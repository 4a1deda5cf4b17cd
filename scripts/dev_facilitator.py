"""A development x402 facilitator: it verifies payments for real (offline: amount, recipient, asset,
validity window, EIP-3009 signature) and "settles" them by recording the nonce locally, answering
with a clearly fake transaction hash (it starts 0xdeadbeef). Nothing touches a chain.

    python -m scripts.dev_facilitator --port 8402
    X402_PAY_TO=0x... X402_FACILITATOR_URL=http://127.0.0.1:8402 make run

Production uses a real facilitator URL instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from server.domain.errors import InvalidArgument
from server.domain.payments.check import PaymentRejected, check, decode_payload
from server.domain.payments.offer import NETWORKS, USDC_DECIMALS, Offer

FAKE_TX_PREFIX = "0xdeadbeef"
_BY_CHAIN = {chain: name for name, (chain, _asset, _token) in NETWORKS.items()}


def offer_from_requirements(version: int, requirements: dict[str, Any]) -> Offer:
    """The offer a payment must match, from the requirements the resource server sends."""
    network = requirements["network"]
    if version == 2:
        network = _BY_CHAIN[int(str(network).removeprefix("eip155:"))]
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
    """`/verify`, `/settle` and `/supported`, with switches for tests: fail, delay."""

    def __init__(self) -> None:
        self.settled: dict[str, str] = {}
        self.failing = False
        self.delay_seconds = 0.0
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

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
        network = body.get("paymentRequirements", {}).get("network", "")
        if not verdict["isValid"]:
            return {
                "success": False,
                "errorReason": verdict["invalidReason"],
                "transaction": "",
                "network": network,
            }
        presented = decode_payload(body["paymentPayload"], int(body.get("x402Version", 1)))
        key = f"{presented.network}:{presented.payer.lower()}:{presented.nonce}"
        with self._lock:
            if key in self.settled:
                return {
                    "success": False,
                    "errorReason": "nonce_already_used",
                    "transaction": "",
                    "network": network,
                }
            tx = FAKE_TX_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:56]
            self.settled[key] = tx
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
                facilitator.calls.append(self.path)
                if facilitator.delay_seconds:
                    time.sleep(facilitator.delay_seconds)
                if facilitator.failing:
                    self.answer(503, {"error": "facilitator down"})
                elif self.path == "/verify":
                    self.answer(200, facilitator.verify(body))
                elif self.path == "/settle":
                    self.answer(200, facilitator.settle(body))
                else:
                    self.answer(404, {"error": "not found"})

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
            f"development x402 facilitator (fake settlements) on {facilitator.url}; Ctrl-C to stop",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
