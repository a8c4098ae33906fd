"""Entry point for `ray submit cluster.yaml scripts/submit_sweep.py -- CONFIG [landscape run options]`.

`ray submit` uploads only this file to the head node, so it holds no logic: it calls the landscape
package that cluster.yaml's setup_commands installed, joining the cluster that `ray up` started.
The head's Ray listens on the node's own address at port 6379 (see head_start_ray_commands).
"""

import os
import socket
import sys


def head_address() -> str:
    """The running head's GCS address, explicitly (never address="auto")."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return f"{socket.gethostbyname(socket.gethostname())}:6379"


def main(argv: list[str]) -> int:
    try:
        from orchestrator.cli.main import main as landscape
    except ImportError:
        sys.exit("landscape is not installed on this node: run `ray up cluster.yaml` again (setup_commands install it)")
    args = ["run", *argv]
    if "--address" not in argv:
        args += ["--address", head_address()]
    # Standalone mode: bad input is one "error: ..." line and exit status 2, as from the `landscape` command
    # (standalone_mode=False would let the error escape as a traceback).
    return landscape(args, prog_name="landscape")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
