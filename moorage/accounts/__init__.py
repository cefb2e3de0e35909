"""Accounts (tenants), users, memberships with roles, and personal API tokens."""
