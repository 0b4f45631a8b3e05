"""Reviewers who may approve or reject models on the Review page.

    python -m core.cli.users add NAME        (asks for the password twice; or --password-stdin)
    python -m core.cli.users remove NAME
    python -m core.cli.users list

Passwords are stored only as scrypt hashes in the studio database. With at least one reviewer registered, the
Review page asks for a login and records the logged-in name on every decision.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from core.jobs.store import Store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.cli.users", description="Manage the studio's reviewers.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a reviewer (or set a new password)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sub.add_parser("remove", help="remove a reviewer").add_argument("name")
    sub.add_parser("list", help="list the reviewers")
    args = parser.parse_args(argv)
    try:
        store = Store()
    except (OSError, ValueError) as exc:
        print(f"error: the data folder cannot be used ({exc})", file=sys.stderr)
        return 2
    if args.command == "list":
        print("\n".join(store.users()) or "no reviewers yet")
    elif args.command == "remove":
        if not store.remove_user(args.name):
            print(f"error: no reviewer {args.name!r}", file=sys.stderr)
            return 1
    else:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"Password for {args.name}: ")
            if getpass.getpass("Again: ") != password:
                print("error: the passwords differ", file=sys.stderr)
                return 1
        try:
            store.add_user(args.name, password)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"reviewer {args.name.strip()} saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
