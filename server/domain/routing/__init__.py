"""Routing profiles: classify a request's complexity, pick a budget, and order candidate models."""
