"""Demo data for `make run`: a store and a consumer who can sign in, with a little content.

Loaded through the real clients into the emulators, so what a person sees on
the local stack is what the functions read.
"""

from __future__ import annotations

from datetime import UTC, datetime

DEMO_PASSWORD = "demo-password-1234"  # local emulator only  # noqa: S105

DEMO_ACCOUNTS = (
    {"uid": "demo-store", "email": "store@demo.orderpally.example", "display_name": "Demo Store", "kind": "store"},
    {
        "uid": "demo-consumer",
        "email": "consumer@demo.orderpally.example",
        "display_name": "Demo Consumer",
        "kind": "consumer",
    },
)


def load(project_id: str) -> str:
    """Loads the demo accounts idempotently; returns a summary for the console."""
    import firebase_admin
    from firebase_admin import auth
    from google.cloud import firestore

    try:
        app = firebase_admin.get_app("demo-data")
    except ValueError:
        app = firebase_admin.initialize_app(options={"projectId": project_id}, name="demo-data")
    db = firestore.Client(project=project_id)
    now = datetime.now(UTC)
    for account in DEMO_ACCOUNTS:
        try:
            auth.get_user(account["uid"], app=app)
        except auth.UserNotFoundError:
            auth.create_user(
                uid=account["uid"],
                email=account["email"],
                password=DEMO_PASSWORD,
                display_name=account["display_name"],
                email_verified=True,
                app=app,
            )
        db.collection("accounts").document(account["uid"]).set(
            {
                "kind": account["kind"],
                "display_name": account["display_name"],
                "email": account["email"],
                "language": "zh-TW",
                "status": "active",
                "created_at": now,
            },
            merge=True,
        )
    lines = ["Demo accounts (password: " + DEMO_PASSWORD + "):"]
    lines += [f"  {a['kind']:<8} {a['email']}" for a in DEMO_ACCOUNTS]
    return "\n".join(lines)
