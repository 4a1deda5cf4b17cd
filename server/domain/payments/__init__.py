"""Buying credits with x402: the offer, checking a payment, the facilitator, and the top-up."""
