"""Upstream LLM providers, each speaking its own wire format and answering in OpenAI's."""
