"""Demo data for `make run`: a store and a consumer who can sign in, with a little content.

Loaded through the real clients into the emulators, so what a person sees on
the local stack is what the functions read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    _demo_notice(db, now)
    lines = ["Demo accounts (password: " + DEMO_PASSWORD + "):"]
    lines += [f"  {a['kind']:<8} {a['email']}" for a in DEMO_ACCOUNTS]
    return "\n".join(lines)


DEMO_NOTICE_ID = "20261101-00000000de"


def _demo_notice(db, now: datetime) -> None:
    """One published service notice, so the notices page has something to show (already mailed)."""
    ref = db.collection("notices").document(DEMO_NOTICE_ID)
    if ref.get().exists:
        return
    published = now - timedelta(days=1)
    effective = (published + timedelta(days=45)).date().isoformat()
    text = {
        "zh-TW": {"title": "直播留言下單新增規格選擇", "body": "消費者留言下單時可選擇商品規格，商店可於後台設定。"},
        "en": {
            "title": "Comment orders gain variant choice",
            "body": "Consumers can pick a variant when ordering by comment.",
        },
    }
    ref.set(
        {
            "kind": "service_change",
            "affects": {"all": True, "plans": [], "features": []},
            "sla": None,
            "first_published_at": published,
            "current_version": 1,
            "effective_date": effective,
            "created_by": "demo",
            "updated_at": published,
        }
    )
    ref.collection("versions").document("1").set(
        {
            "version": 1,
            "text": text,
            "effective_date": effective,
            "published_at": published,
            "exemption": None,
            "correction_note": None,
            "author": "demo",
            "created_at": published,
        }
    )
