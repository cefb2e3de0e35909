"""The audit trail: who changed what in an account, written with the change itself."""
