"""Makes a test CA, a server certificate and a client certificate for a TLS Docker engine.

Usage: make_test_certs.py DIR IP

Writes DIR/server/{ca,cert,key}.pem for dockerd (--tlscacert/--tlscert/--tlskey) and
DIR/client/{ca,cert,key}.pem, the layout DOCKER_CERT_PATH expects (harness/certs.py makes
them). For tests only: the CA's key is thrown away, the certificates last 30 days.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.certs import make_certs  # noqa: E402 - after the path that finds it

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    make_certs(Path(sys.argv[1]), [sys.argv[2], "127.0.0.1"])
