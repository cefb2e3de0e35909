"""The region agent, without Django (a test enforces it).

Layers, as ``docs/sync.md`` describes the protocol:

- :mod:`moorage.protocol` (not part of the agent) — the wire contract shared with the control
  plane: signed envelopes, associated data of region-sealed values, payload types and enums;
- :mod:`.client` — the agent endpoints over httpx: verified answers, errors sorted by what the
  agent does next (:mod:`.errors`);
- :mod:`.replica` — the local SQLite replica, secrets sealed, batches atomic and idempotent;
- :mod:`.sync` — the reconcile loop (snapshot, long-polled changes, acks), with
  :mod:`.backoff` shared by the loop and the deployer's reports;
- :mod:`.runtime` — the engines behind one interface (:mod:`.runtime.base`): pulls with the
  tenant's credential only, containers or services, readiness, labels;
- :mod:`.builder` — builds from source on the region's engine;
- :mod:`.deployer` — runs the replica's pending deployments on the runtime and reports them;
  its errors (:class:`.errors.DeployError`) carry stable codes;
- :mod:`.applogs` — answers the control plane's requests for an app's logs in its own
  threads, masked (:mod:`.masking`) and bounded.

Configuration (:class:`.config.AgentConfig`) is passed in, never read from the environment deep
inside; :mod:`.logs` formats the agent's log lines.
"""
