"""Operator CLI: grant or remove staff roles (support, security, admin) on a Firebase user.

The first admin has to come from somewhere: an operator with the Firebase
Authentication Admin role on the project runs this with Application Default
Credentials, for a user who has signed up and verified their address (roles go
to no unverified account: anyone may have signed up with it first); afterwards
admins use PUT /staff/staff-roles/{uid}. The user's sessions are revoked so the
change applies at once; the change is written to the user's audit trail.

    python infra/ops/staff_roles.py --project P --email ops@orderpally.example --roles admin --reason "first admin"
    python infra/ops/staff_roles.py --project P --uid abc123 --roles "" --reason "left the company"
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions"))

STAFF_ROLES = ("support", "security", "admin")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--uid")
    who.add_argument("--email")
    parser.add_argument("--roles", required=True, help="comma-separated; empty removes every staff role")
    parser.add_argument("--reason", required=True)
    args = parser.parse_args(argv)

    roles = sorted({r.strip() for r in args.roles.split(",") if r.strip()})
    unknown = [r for r in roles if r not in STAFF_ROLES]
    if unknown or len(args.reason.strip()) < 5:
        parser.error(f"roles must be among {', '.join(STAFF_ROLES)} and a reason of 5+ characters is needed")
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", args.project)

    from firebase_admin import auth

    from orderpally import audit, clients, web
    from orderpally.access import staff_roles

    app = clients.firebase_app()
    user = auth.get_user(args.uid, app=app) if args.uid else auth.get_user_by_email(args.email, app=app)
    try:
        staff_roles.change_roles(
            clients.firestore_client(), app, user, roles, audit.Actor("operator", "cli"), args.reason, None
        )
    except web.Problem as exc:
        print(f"error: {user.uid}: {exc.detail}", file=sys.stderr)
        return 2
    print(f"{user.uid}: roles = {', '.join(roles) or '(none)'}; sessions revoked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
