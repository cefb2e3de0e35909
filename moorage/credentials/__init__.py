"""Account-level credentials: container-registry logins and git tokens, sealed at rest."""
