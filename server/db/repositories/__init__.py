"""Repositories: the only code that writes SQL. Each public method is one transaction."""

from server.db.repositories.accounts import AccountRepository
from server.db.repositories.ledger import LedgerRepository, LedgerResult
from server.db.repositories.probe import DatabaseProbe

__all__ = ["AccountRepository", "DatabaseProbe", "LedgerRepository", "LedgerResult"]
