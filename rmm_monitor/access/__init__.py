"""Who may do what, their electronic signatures, and the tamper-evident audit log (tables in tables.sql)."""

from . import audit, signatures, users
from .users import ROLES, SYSTEM, AuthError, Forbidden, Principal, UserError

__all__ = ["audit", "signatures", "users", "ROLES", "SYSTEM", "AuthError", "Forbidden", "Principal", "UserError"]
