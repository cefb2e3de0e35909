"""The region agent, without Django (a test enforces it).

Layers, as ``docs/sync.md`` describes the protocol:

- :mod:`.protocol` — signed envelopes and region sealing, shared with the control plane;
- :mod:`.client` — the agent endpoints over httpx: verified answers, errors sorted by what the
  agent does next (:mod:`.errors`);
- :mod:`.replica` — the local SQLite replica, secrets sealed, batches atomic and idempotent;
- :mod:`.sync` — the reconcile loop (snapshot, long-polled changes, acks, backoff);
- :mod:`.runtime` — the Docker Engine API through docker-py: pulls with the tenant's
  credential only, containers, readiness;
- :mod:`.deployer` — runs the replica's pending deployments on the runtime and reports them.

Configuration (:class:`.config.AgentConfig`) is passed in, never read from the environment deep
inside; :mod:`.logs` formats the agent's log lines.
"""
