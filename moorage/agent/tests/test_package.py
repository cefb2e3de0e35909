"""The agent runs without Django."""

from __future__ import annotations

import subprocess
import sys


def test_the_agent_and_its_command_do_not_import_django() -> None:
    code = (
        "import sys, moorage.agent, moorage.agent.client, moorage.agent.config, "
        "moorage.agent.errors, moorage.agent.logs, moorage.agent.protocol, "
        "moorage.agent.replica, moorage.agent.sync, moorage.agent.runtime, "
        "moorage.agent.deployer, moorage.cli.agent; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"
