"""pi-fleet-server serve|check|prune --config server.toml"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .config import ConfigError, load


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pi-fleet-server", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help in (("serve", "run the server"), ("check", "validate the configuration and exit"),
                       ("prune", "delete what [retention] keeps no longer, once (the server does it hourly)")):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--config", type=Path, required=True, help="the server's TOML settings")
        if name == "serve":
            sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
            sp.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"pi-fleet-server: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.config}: ok ({len(settings.kiosk_tokens)} kiosk(s), database {settings.database_shown()})")
        return 0
    if args.command == "prune":
        from .retention import prune
        from .store import Store

        store = Store(settings.database, settings.database_password)
        try:
            print(f"{settings.database_shown()}: {prune(store, settings.retention, datetime.now(UTC)).describe()}")
        finally:
            store.close()
        return 0
    import uvicorn

    from .app import create_app
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
