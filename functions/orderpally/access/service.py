"""Access's use cases (clauses 1.1, 1.3, 5.1, 5.2): sign-up, sign-in, sessions, passwords,
Facebook sign-in, API keys and staff roles; called by access's HTTP handlers, which
authenticate, parse, call these and serialise (cookies included).

Answers never tell whether an email address is registered: sign-up and reset
always answer 202 and mail the address what fits; sign-in answers one 401 for
an unknown address, a wrong password and a disabled account alike. Nor does
their timing: registered and unregistered addresses make the same round trips
before the answer (the registered one's audit entry is staged, linked by the
trail's sequencer or next reader; its mail is staged and published without waiting).
A successful sign-in's audit entry is staged the same way, in the commit that gives
back its counted attempts.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from orderpally import accounts, audit, clients, events, fields, limiter, outbox, web
from orderpally.access import api_keys, identity_toolkit, passwords, sessions, store
from orderpally.access.principal import Principal, roles_from_claims
from orderpally.accounts import AccountKind, Language, trail_is_open
from orderpally.config import settings
from orderpally.messaging.requests import (
    MESSAGE_TYPE,
    TOPIC,
    EmailRequest,
    SendEmail,
    send_staged,
    stage_email,
    unstage_email,
)

if TYPE_CHECKING:
    from firebase_admin import App
    from google.cloud.firestore import Client

    from orderpally.access import facebook

# Password attempts count as failures until they succeed (then they are given back).
# A browser without a device cookie for the account: per client address; per address and
# account; per account across addresses, loose enough to only slow a distributed guess.
# Strangers can exhaust that last one, so a browser with the account's device cookie is
# exempt from all three and limited only on its own counter (OWASP device cookies).
SIGN_IN_PER_ADDRESS = limiter.Limit("sign-in-address", 30, timedelta(minutes=10))
SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS = limiter.Limit("sign-in-account-address", 5, timedelta(minutes=15))
SIGN_IN_FAILURES_PER_ACCOUNT = limiter.Limit("sign-in-account", 100, timedelta(hours=1))
SIGN_IN_FAILURES_PER_DEVICE = limiter.Limit("sign-in-device", 10, timedelta(minutes=15))
# The current password at a password change: per session, which only its holder can use.
PASSWORD_CHECKS_PER_SESSION = limiter.Limit("password-check-session", 5, timedelta(minutes=15))
# Tallies only (never refuse): the write an unregistered address makes where a registered one
# stages its audit entry, so both answer after the same round trips.
UNREGISTERED_SIGN_IN_FAILURES = limiter.Limit("sign-in-unregistered", 1_000_000, timedelta(hours=1))
UNREGISTERED_RESETS = limiter.Limit("reset-unregistered", 1_000_000, timedelta(hours=1))
SIGN_UP_PER_ADDRESS = limiter.Limit("sign-up-address", 10, timedelta(hours=1))
RESET_PER_ADDRESS = limiter.Limit("reset-address", 10, timedelta(hours=1))
RESET_PER_ACCOUNT = limiter.Limit("reset-account", 3, timedelta(hours=1))
# Read where an unregistered address has no account: the same Firestore read a registered one makes.
NO_ACCOUNT = "~unregistered"
# Accounts whose API keys still work; suspension and termination stop them.
FACEBOOK_LINK_LIFETIME = timedelta(minutes=30)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Ports:
    """What the use cases need from the outside; the HTTP edge builds it from `clients`."""

    db: Client
    auth_app: App  # Firebase Authentication: users, session cookies, revocations
    identity: identity_toolkit.IdentityToolkit  # password and custom-token sign-ins
    pepper: bytes  # API_KEY_PEPPER: key hashes and device cookies
    publisher: events.Publisher  # mails published without waiting (`publish_later`)
    publish_mail: SendEmail  # waits for Pub/Sub's reply
    now: Callable[[], datetime] = field(default=_utc_now)


@dataclass(frozen=True)
class NewSession:
    """A session to hand the browser: its cookie and CSRF token, what `GET /auth/session` shows,
    and for a password sign-in the device cookie that trusts this browser for the account."""

    cookie: str
    csrf: str
    body: dict[str, Any]
    device_token: str | None = None


def normalised_email(value: str) -> str:
    return value.strip().lower()


def actor_of(principal: Principal) -> audit.Actor:
    return audit.Actor(kind=principal.kind, id=principal.account_id, role=",".join(sorted(principal.roles)) or None)


def _event(
    address: str | None, account_id: str, action: str, actor: audit.Actor | None = None, **details: Any
) -> audit.AuditEvent:
    actor = actor or audit.Actor(kind="customer", id=account_id)
    return audit.AuditEvent(action, actor, address, None, details)


def record_event(
    db: Client, address: str | None, account_id: str, action: str, actor: audit.Actor | None = None, **details: Any
) -> None:
    audit.record(db, account_id, _event(address, account_id, action, actor, **details))


def _check_new_password(password: str, field: str) -> None:
    problem = passwords.problem_with(password)
    if problem:
        raise web.Problem(422, "weak-password", "Password not accepted", problem, field=field)


def wrong_credentials() -> web.Problem:
    return web.Problem(401, "invalid-credentials", "Sign-in failed", "The email address or password is wrong.")


def identity_unavailable(exc: identity_toolkit.IdentityUnavailable) -> web.Problem:
    """503: Identity Platform did not check anything. A configuration fault (logged with an alert) lasts longer."""
    retry = "60" if isinstance(exc, identity_toolkit.IdentityMisconfigured) else "5"
    return web.Problem(
        503, "identity-unavailable", "Sign-in unavailable", "Try again shortly.", headers={"Retry-After": retry}
    )


def action_code_settings() -> Any:
    """Mailed links return the browser to the frontend (its first origin), which asks
    `GET /auth/session` for the account's state; frontend origins are authorised domains."""
    from firebase_admin import auth

    return auth.ActionCodeSettings(url=settings().frontend_origins[0] + "/")


def publish_later(ports: Ports, notice: EmailRequest) -> None:
    """Publishes a mail staged in the outbox without holding the answer for Pub/Sub's reply.

    Once published it leaves the outbox; if the publish fails or never finishes, the
    archive-redrive schedule publishes it (its idempotency key keeps it to one mail).
    """

    def published(future: Any) -> None:
        if future.exception() is None:
            with events.left_for_later("unstaging a published mail"):
                unstage_email(ports.db, notice)

    with events.left_for_later(f"{notice.template} email"):
        ports.publisher.publish_async(TOPIC, MESSAGE_TYPE, notice.model_dump(mode="json")).add_done_callback(published)


def uid_for(ports: Ports, email: str) -> str | None:
    from firebase_admin import auth

    try:
        return auth.get_user_by_email(email, app=ports.auth_app).uid
    except auth.UserNotFoundError:
        return None


# --- sign-up and verification -----------------------------------------------------------


def sign_up(
    ports: Ports,
    email: str,
    password: str,
    display_name: str,
    kind: AccountKind,
    language: Language,
    address: str | None,
) -> None:
    """A new account and its verification mail; for a registered address, a mail saying so."""
    from firebase_admin import auth
    from firebase_admin import exceptions as firebase_exceptions

    _check_new_password(password, "password")
    db, now = ports.db, ports.now()
    limiter.hit(db, SIGN_UP_PER_ADDRESS, address or "unknown", now)
    email = normalised_email(email)
    try:
        user = auth.create_user(
            email=email, password=password, display_name=display_name, email_verified=False, app=ports.auth_app
        )
    except auth.EmailAlreadyExistsError:
        # The Auth round trips a new address makes after its creation (its user read back, its
        # verification link), made here too so the time does not tell; the link is not sent.
        uid_for(ports, email)
        with contextlib.suppress(firebase_exceptions.FirebaseError):
            auth.generate_email_verification_link(
                email, action_code_settings=action_code_settings(), app=ports.auth_app
            )
        notice = EmailRequest(
            idempotency_key=f"sign_up_existing:{email}:{now:%Y%m%d%H}",
            template="sign_up_existing",
            to_email=email,
            language=language,
        )
        batch = db.batch()
        stage_email(batch, db, notice, now)
        batch.commit()
        publish_later(ports, notice)
        return
    link = auth.generate_email_verification_link(email, action_code_settings=action_code_settings(), app=ports.auth_app)
    notice = EmailRequest(
        idempotency_key=f"verify_email:{user.uid}:1",
        template="verify_email",
        to_email=email,
        account_id=user.uid,
        language=language,
        data={"display_name": display_name, "link": link},
    )
    # The account, its first trail entry and its mail in one commit, like an existing address's one.
    batch = db.batch()
    accounts.create(
        db,
        user.uid,
        {
            "kind": kind,
            "display_name": display_name,
            "email": email,
            "language": language,
            "status": "active",
            "plan": None,
            "features": [],
            "created_at": now,
        },
        writer=batch,
    )
    audit.stage(batch, audit.account_chain(db, user.uid), _event(address, user.uid, "account.created"), now)
    stage_email(batch, db, notice, now)
    batch.commit()
    publish_later(ports, notice)


def resend_verification(ports: Ports, principal: Principal) -> None:
    from firebase_admin import auth

    user = auth.get_user(principal.account_id, app=ports.auth_app)
    # Firebase Auth's state, not the session's claim: the link may have been followed since sign-in.
    if user.email_verified:
        raise web.Problem(409, "email-already-verified", "Already verified", "This email address is verified.")
    now = ports.now()
    limiter.hit(ports.db, RESET_PER_ACCOUNT, f"verify:{principal.account_id}", now)
    if not user.email:  # e.g. a Facebook account with a phone number only: nothing to verify
        raise web.Problem(409, "no-email-address", "No email address", "This account has no email address.")
    link = auth.generate_email_verification_link(
        user.email, action_code_settings=action_code_settings(), app=ports.auth_app
    )
    ports.publish_mail(
        EmailRequest(
            idempotency_key=f"verify_email:{user.uid}:{now.isoformat()}",
            template="verify_email",
            to_email=user.email,
            account_id=user.uid,
            data={"display_name": user.display_name or "", "link": link},
        )
    )


# --- sign-in and sessions ---------------------------------------------------------------


def sign_in_counters(address: str, email: str, device: str | None) -> tuple[tuple[limiter.Limit, str], ...]:
    """The counters a password attempt is counted on: a trusted browser (`device`, the nonce of its
    device cookie for this account) only on its own, so strangers' guesses never lock it out."""
    if device:
        return ((SIGN_IN_FAILURES_PER_DEVICE, device),)
    return (
        (SIGN_IN_PER_ADDRESS, address),
        (SIGN_IN_FAILURES_PER_ACCOUNT_ADDRESS, f"{email}|{address}"),
        (SIGN_IN_FAILURES_PER_ACCOUNT, email),
    )


def trusted_device(ports: Ports, device_cookie: str | None, email: str, now: datetime) -> sessions.Device | None:
    """The browser's device cookie, if it proves an earlier password sign-in to this account that
    neither "sign out everywhere" nor a password change has ended since."""
    from firebase_admin import auth

    if not device_cookie:
        return None
    device = sessions.read_device(ports.pepper, device_cookie, email, now)
    if device is None:
        return None
    # Only a browser that signed in to this address before gets here: the lookup reveals nothing.
    try:
        user = auth.get_user_by_email(email, app=ports.auth_app)
    except auth.UserNotFoundError:
        return None
    return None if sessions.device_revoked(device, user.tokens_valid_after_timestamp) else device


def verify_password(
    ports: Ports, email: str, password: str, address: str | None, device_cookie: str | None, now: datetime
) -> SignedInPassword:
    """Checks the password under the sign-in limits; audits a failure on the account it names.
    A success's counted attempts are for the caller to give back (`start_session(refund=...)`)."""
    db = ports.db
    device = trusted_device(ports, device_cookie, email, now)
    counters = sign_in_counters(address or "unknown", email, device.nonce if device else None)
    # Counted as a failure until it succeeds: concurrent guesses cannot all slip in under the limit.
    limiter.hit_all(db, counters, now)
    try:
        signed_in = ports.identity.sign_in_with_password(email, password)
    except identity_toolkit.WrongCredentials:
        record_failure(ports, email, address, now)
        raise wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        # Nobody checked the password (Identity Platform down, or refusing our API key or
        # configuration): no failure is counted and nothing is written to the account's trail.
        limiter.refund_all(db, counters, now)
        raise identity_unavailable(exc) from None
    # A success was no failure, on any counter: given back with the session's audit entry.
    return SignedInPassword(signed_in, counters, now)


def record_failure(ports: Ports, email: str, address: str | None, now: datetime) -> None:
    """The failure in the named account's trail: staged, for the trail's next reader to link.

    Registered or not, the same round trips: a user lookup, an account read, one commit.
    """
    db = ports.db
    uid = uid_for(ports, email)
    open_trail = trail_is_open(db, uid or NO_ACCOUNT)
    batch = db.batch()
    if uid and open_trail:
        event = _event(address, uid, "sign_in.failed", audit.Actor(kind="anonymous", id="unknown"))
        audit.stage(batch, audit.account_chain(db, uid), event, now)
    else:
        limiter.tally(batch, db, UNREGISTERED_SIGN_IN_FAILURES, email, now)
    batch.commit()


@dataclass(frozen=True)
class SignedInPassword:
    signed_in: identity_toolkit.SignedIn
    counted: tuple[tuple[limiter.Limit, str], ...]  # the attempts counted as failures until now
    at: datetime  # when they were counted


def session_body(
    ports: Ports,
    uid: str,
    email_verified: bool,
    roles: list[str],
    csrf: str,
    session_email_verified: bool | None = None,
    account: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a frontend is told of a session; `account` when already read."""
    account = (accounts.load(ports.db, uid) if account is None else account) or {}
    return {
        "account_id": uid,
        "kind": "staff" if roles else account.get("kind"),
        "roles": roles,
        "email_verified": email_verified,
        # What this session proves (actions that need a verified address go by it): false while
        # email_verified is true means the address was verified after sign-in; sign in again.
        "session_email_verified": email_verified if session_email_verified is None else session_email_verified,
        "display_name": account.get("display_name"),
        "language": account.get("language"),
        "csrf_token": csrf,
    }


def start_session(
    ports: Ports,
    signed_in: identity_toolkit.SignedIn,
    method: str,
    address: str | None,
    trusted_email: str | None = None,
    refund: SignedInPassword | None = None,
) -> NewSession:
    """A session for the signed-in user, audited; with `trusted_email` (a password sign-in),
    a device cookie that trusts this browser for the account; with `refund`, the password
    check's counted attempts given back.

    The session's audit entry is staged, in the one commit that also gives the attempts back,
    before the session is answered: a crash after it loses nothing, and the trail's sequencer
    (or its next reader) links it into the chain, so sign-in never waits on the chain's lock.
    """
    from firebase_admin import auth

    db = ports.db
    try:
        # The account's read goes while Firebase mints the cookie: neither needs the other.
        minting = clients.background().submit(sessions.mint, ports.auth_app, signed_in.id_token)
        account = accounts.load(db, signed_in.uid)
        cookie = minting.result()
    except BaseException:
        if refund is not None:
            limiter.refund_all(db, refund.counted, refund.at)
        raise
    claims = auth.verify_session_cookie(cookie, app=ports.auth_app)
    roles = sorted(roles_from_claims(claims))
    csrf = secrets.token_urlsafe(32)
    body = session_body(ports, signed_in.uid, bool(claims.get("email_verified")), roles, csrf, account=account)
    device = sessions.device_token(ports.pepper, trusted_email, ports.now()) if trusted_email else None
    batch = db.batch()
    if refund is not None:
        limiter.refund_all(db, refund.counted, refund.at, writer=batch)
    event = _event(address, signed_in.uid, "sign_in.succeeded", method=method)
    audit.stage(batch, audit.account_chain(db, signed_in.uid), event)
    batch.commit()
    return NewSession(cookie=cookie, csrf=csrf, body=body, device_token=device)


def sign_in(ports: Ports, email: str, password: str, address: str | None, device_cookie: str | None) -> NewSession:
    """A password sign-in: checked under the limits, failures on the account's trail."""
    now = ports.now()
    email = normalised_email(email)
    checked = verify_password(ports, email, password, address, device_cookie, now)
    return start_session(ports, checked.signed_in, "password", address, trusted_email=email, refund=checked)


def current_session(ports: Ports, principal: Principal, csrf: str) -> dict[str, Any]:
    """The session with the address's verification state as Firebase Auth holds it now."""
    from firebase_admin import auth

    reading = clients.background().submit(accounts.load, ports.db, principal.account_id)  # while Firebase answers
    user = auth.get_user(principal.account_id, app=ports.auth_app)
    account = reading.result() or {}
    roles = sorted(principal.roles)
    return session_body(
        ports, principal.account_id, bool(user.email_verified), roles, csrf, principal.email_verified, account
    )


def sign_out(ports: Ports, principal: Principal, session_cookie: str, everywhere: bool, address: str | None) -> None:
    if everywhere:
        sessions.revoke_all(ports.auth_app, principal.account_id)  # device cookies issued before end too
    sessions.revoke_one(ports.db, session_cookie, ports.now())
    action = "sign_out.everywhere" if everywhere else "sign_out"
    record_event(ports.db, address, principal.account_id, action, actor_of(principal))


# --- passwords --------------------------------------------------------------------------


def request_password_reset(ports: Ports, email: str, address: str | None) -> None:
    """A reset link mailed to a registered, open account; nothing that tells which it was."""
    from firebase_admin import auth

    email = normalised_email(email)
    db, now = ports.db, ports.now()
    try:
        limiter.hit_all(db, [(RESET_PER_ADDRESS, address or "unknown"), (RESET_PER_ACCOUNT, email)], now)
    except limiter.Limited as exc:
        if exc.limit is RESET_PER_ADDRESS:
            raise
        return  # a per-account limit must not tell the address is registered
    # Registered or not, the same round trips before the answer: a user lookup, an account read,
    # a link request (refused for an unknown address), one commit; the mail is published after.
    uid = uid_for(ports, email)
    open_trail = trail_is_open(db, uid or NO_ACCOUNT)
    try:
        link = auth.generate_password_reset_link(email, action_code_settings=action_code_settings(), app=ports.auth_app)
    except (auth.EmailNotFoundError, auth.UserNotFoundError):
        link = None
    batch = db.batch()
    notice = None
    if uid and open_trail and link:  # a terminated account gets no reset link and no new trail
        notice = EmailRequest(
            idempotency_key=f"password_reset:{uid}:{now.isoformat()}",
            template="password_reset",
            to_email=email,
            account_id=uid,
            data={"link": link},
        )
        stage_email(batch, db, notice, now)
        event = _event(address, uid, "password_reset.requested", audit.Actor(kind="anonymous", id="unknown"))
        audit.stage(batch, audit.account_chain(db, uid), event, now)
    else:
        limiter.tally(batch, db, UNREGISTERED_RESETS, email, now)
    batch.commit()
    if notice is not None:
        publish_later(ports, notice)


def change_password(
    ports: Ports, principal: Principal, session_cookie: str, current: str, new: str, address: str | None
) -> NewSession:
    """A new password once the current one is proven; every session ends, this browser gets a new one."""
    from firebase_admin import auth

    _check_new_password(new, "new_password")
    now = ports.now()
    user = auth.get_user(principal.account_id, app=ports.auth_app)
    db = ports.db
    _check_current_password(ports, principal, session_cookie, user.email, current, address, now)
    notice = EmailRequest(
        idempotency_key=f"password_changed:{user.uid}:{now.isoformat()}",
        template="password_changed",
        to_email=user.email,
        account_id=user.uid,
    )
    # The owner's warning is staged before the change: a crash after the change still sends it
    # (the redrive), and one before it sends a needless warning, never none.
    staging = db.batch()
    stage_email(staging, db, notice, now)
    staging.commit()
    try:
        auth.update_user(user.uid, password=new, app=ports.auth_app)
    except Exception:
        unstage_email(db, notice)
        raise
    events.inject_fault(db, outbox.FAULTS, "after-password-change")
    sessions.revoke_all(ports.auth_app, user.uid)
    record_event(ports.db, address, user.uid, "password.changed", actor_of(principal))
    with events.left_for_later("password-changed email"):
        send_staged(db, notice, ports.publish_mail)
    # Every session ended with the old password; this browser continues with a new one. The
    # password was set a moment ago, so no guess is being checked: no sign-in limit applies.
    try:
        signed_in = ports.identity.sign_in_with_password(user.email, new)
    except identity_toolkit.IdentityUnavailable as exc:
        raise identity_unavailable(exc) from None
    return start_session(ports, signed_in, "password_change", address, trusted_email=normalised_email(user.email))


def _check_current_password(
    ports: Ports,
    principal: Principal,
    session_cookie: str,
    email: str,
    password: str,
    address: str | None,
    now: datetime,
) -> None:
    """The current password at a change, limited per session: the signed-in holder's own counter,
    which no stranger's guesses at the sign-in form can fill."""
    counters = ((PASSWORD_CHECKS_PER_SESSION, store.session_digest(session_cookie)),)
    limiter.hit_all(ports.db, counters, now)
    try:
        ports.identity.sign_in_with_password(email, password)
    except identity_toolkit.WrongCredentials:
        record_event(ports.db, address, principal.account_id, "password_change.failed", actor_of(principal))
        raise wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        limiter.refund_all(ports.db, counters, now)
        raise identity_unavailable(exc) from None
    limiter.refund_all(ports.db, counters, now)


# --- Facebook sign-in -------------------------------------------------------------------


def facebook_link_required() -> web.Problem:
    return web.Problem(
        409,
        "facebook-link-required",
        "Confirm by email",
        "An account with this email address exists; open the link we mailed to it to use Facebook sign-in.",
    )


def _offer_facebook_link(ports: Ports, uid: str, user: facebook.FacebookUser, link_base: str, now: datetime) -> None:
    token = store.offer_link(ports.db, uid, user.id, now + FACEBOOK_LINK_LIFETIME)
    ports.publish_mail(
        EmailRequest(
            idempotency_key=f"facebook_link:{uid}:{now.isoformat()}",
            template="facebook_link",
            to_email=user.email or "",
            account_id=uid,
            data={"link": f"{link_base}/link?token={token}"},
        )
    )


def _new_facebook_account(ports: Ports, user: facebook.FacebookUser, uid: str, now: datetime) -> tuple[str, bool]:
    """The Facebook user's own account, created unless a concurrent first sign-in did; (uid, created)."""
    from firebase_admin import auth
    from google.api_core.exceptions import AlreadyExists

    try:
        auth.create_user(
            uid=uid, email=user.email, display_name=user.name or None, email_verified=False, app=ports.auth_app
        )
    except auth.UidAlreadyExistsError:
        pass
    except auth.EmailAlreadyExistsError:
        if uid_for(ports, user.email or "") != uid:  # someone signed up with this address meanwhile
            raise facebook_link_required() from None
    try:
        accounts.create(
            ports.db,
            uid,
            {
                "kind": "consumer",
                "display_name": user.name or "Facebook user",
                "email": user.email,
                "language": "zh-TW",
                "status": "active",
                "plan": None,
                "features": [],
                "facebook_id": user.id,
                "created_at": now,
            },
        )
    except AlreadyExists:
        return uid, False
    return uid, True


def _sign_in_as(ports: Ports, uid: str) -> identity_toolkit.SignedIn:
    try:
        return ports.identity.sign_in_as(uid)
    except identity_toolkit.WrongCredentials:
        raise wrong_credentials() from None
    except identity_toolkit.IdentityUnavailable as exc:
        raise identity_unavailable(exc) from None


def facebook_sign_in(ports: Ports, code: str, redirect_uri: str, address: str | None) -> NewSession:
    """Signs in the Facebook user the code vouches for: into their account, a new one, or (for an
    address that has an account) not before its owner opens the link mailed to it."""
    from orderpally.access import facebook  # its HTTP client stays off the other functions' cold start

    now = ports.now()
    limiter.hit(ports.db, SIGN_IN_PER_ADDRESS, address or "unknown", now)
    try:
        token = facebook.exchange_code(code, redirect_uri)
        user = facebook.read_user(token, facebook.verify_token(token))
    except facebook.FacebookUnavailable:
        raise web.Problem(
            503,
            "facebook-unavailable",
            "Facebook unavailable",
            "Facebook did not answer; try again shortly.",
            headers={"Retry-After": "30"},
        ) from None
    uid = accounts.id_with_facebook_id(ports.db, user.id)
    if uid is None:
        own = store.own_account_id(ports.db, user.id, now)
        existing = uid_for(ports, user.email) if user.email else None
        if existing and existing != own:
            _offer_facebook_link(ports, existing, user, redirect_uri.rsplit("/", 1)[0], now)
            raise facebook_link_required()
        uid, created = _new_facebook_account(ports, user, own, now)
        if created:
            record_event(ports.db, address, uid, "account.created", method="facebook")
    return start_session(ports, _sign_in_as(ports, uid), "facebook", address)


def confirm_facebook_link(ports: Ports, token: str, address: str | None) -> NewSession:
    """Joins the Facebook user to the account the mailed link names, and signs them in."""
    db = ports.db
    link = store.take_link(db, token, ports.now())
    if link is None:
        raise web.Problem(410, "facebook-link-expired", "Link expired", "Start Facebook sign-in again for a new link.")
    owner = accounts.id_with_facebook_id(db, link["facebook_id"])
    if owner not in (None, link["account_id"]):
        raise web.Problem(
            409, "facebook-already-linked", "Already linked", "This Facebook user signs in to another account."
        )
    accounts.link_facebook_id(db, link["account_id"], link["facebook_id"])
    _take_over_from_whoever_was_there(ports, link["account_id"])
    record_event(db, address, link["account_id"], "facebook.linked")
    return start_session(ports, _sign_in_as(ports, link["account_id"]), "facebook", address)


def _take_over_from_whoever_was_there(ports: Ports, uid: str) -> None:
    """Following the mailed link proves the address. Whoever signed up with it before it was
    proven may not be its owner (a pre-registered address): their password goes and every
    session ends, so only the person who holds the mailbox and the Facebook account stays."""
    from firebase_admin import auth

    user = auth.get_user(uid, app=ports.auth_app)
    if not user.email_verified:
        # No way to unset a password: one nobody knows. The owner may set their own by reset.
        auth.update_user(uid, email_verified=True, password=secrets.token_urlsafe(48), app=ports.auth_app)
    sessions.revoke_all(ports.auth_app, uid)


# --- API keys ---------------------------------------------------------------------------


def issue_key(
    ports: Ports, principal: Principal, name: str, scopes: list[str], expires_in_days: int, address: str | None
) -> tuple[dict[str, Any], str]:
    """A new key for the customer, audited; its public record and the key, shown this once."""
    now = ports.now()
    record, key = api_keys.create(
        ports.db, principal.account_id, name, scopes, now + timedelta(days=expires_in_days), ports.pepper, now
    )
    try:
        record_event(
            ports.db,
            address,
            principal.account_id,
            "api_key.created",
            actor_of(principal),
            key_id=record["id"],
            scopes=record["scopes"],
        )
    except Exception:
        # Nobody will see this key: it must neither work nor count, and no key goes unaudited.
        api_keys.discard(ports.db, record["id"])
        raise
    return record, key


def keys_of(ports: Ports, principal: Principal) -> list[dict[str, Any]]:
    return api_keys.owned(ports.db, principal.account_id)


def revoke_all_keys(db: Client, account_id: str, now: datetime) -> int:
    """Revokes every key of the account (at termination); how many were still live."""
    return api_keys.revoke_all(db, account_id, now)


def revoke_key(ports: Ports, principal: Principal, key_id: str, address: str | None) -> None:
    """Revokes one of the caller's keys (a key may revoke itself); 404 for any other id."""
    event = audit.AuditEvent("api_key.revoked", actor_of(principal), address, None, {"key_id": key_id})
    if not api_keys.KEY_ID.fullmatch(key_id) or not api_keys.revoke(
        ports.db, principal.account_id, key_id, ports.now(), event
    ):
        raise web.Problem(404, "api-key-not-found", "Not found", "No such API key.")


# --- the audit trail, for its customer and for staff -------------------------------------

# Who at OrderPally acted, and from where, is the company's to know: the customer sees the
# role and the reason of a staff member's or an operator's entry.
STAFF_ACTORS = frozenset({"staff", "operator"})


def as_the_customer_sees(entry: dict[str, Any]) -> dict[str, Any]:
    actor = entry.get("actor") or {}
    if actor.get("kind") not in STAFF_ACTORS:
        return entry
    return {**entry, "actor": {"kind": actor["kind"], "role": actor.get("role")}, "client_address": None}


def trail_page(db: Client, account_id: str, page_size: int, before_seq: int | None, for_customer: bool) -> TrailPage:
    """Up to `page_size` entries of the account's trail, newest first, below `before_seq`."""
    entries = audit.page(db, account_id, page_size + 1, before_seq)
    shown = entries[:page_size]
    if for_customer:
        shown = [as_the_customer_sees(e) for e in shown]
    return TrailPage(shown, more=len(entries) > page_size)


@dataclass(frozen=True)
class TrailPage:
    entries: list[dict[str, Any]]
    more: bool  # entries older than the last one remain


# --- what the account's trust report reads of access (public reads) ---------------------


def staff_reads(db: Client, account_id: str) -> list[dict[str, Any]]:
    """Every staff read of the account's data in its trail, newest first, each as its customer
    sees it: the role and the reason, never who it was or from which address."""
    return [as_the_customer_sees(entry) for entry in store.trail_entries_with_action(db, account_id, "staff.read")]


@dataclass(frozen=True)
class OpenSessions:
    """The sign-ins whose session cookie may still work; what a session's use is, is not recorded."""

    sign_ins: list[dict[str, Any]]  # the sign_in.succeeded entries, newest first
    ended_everywhere_at: datetime | None  # every session issued before this was revoked
    # Sign-outs in one browser in the same window: each ended a session, but neither the trail
    # nor the revocation list (cookie digests only) says which.
    single_sign_outs: int


def open_sessions(db: Client, auth_app: App, account_id: str, lifetime: timedelta, now: datetime) -> OpenSessions:
    """Sign-ins within a session's `lifetime` and after Firebase's tokens-valid-after time (moved by
    "sign out everywhere", a password change, a role change, a suspension or a termination)."""
    from firebase_admin import auth

    try:
        user = auth.get_user(account_id, app=auth_app)
    except auth.UserNotFoundError:
        return OpenSessions([], None, 0)
    valid_after = (
        datetime.fromtimestamp(user.tokens_valid_after_timestamp / 1000, UTC)
        if user.tokens_valid_after_timestamp
        else None
    )
    created_ms = user.user_metadata.creation_timestamp if user.user_metadata else None
    # Firebase also sets it (to the second) when it creates the user, which ended no session.
    created_second_ms = created_ms // 1000 * 1000 if created_ms else 0
    ended = valid_after if (user.tokens_valid_after_timestamp or 0) > created_second_ms else None
    if user.disabled:
        return OpenSessions([], ended, 0)
    since = max(now - lifetime, valid_after) if valid_after else now - lifetime
    sign_ins, sign_outs, before = [], 0, None
    while True:  # newest first, only as far back as a session can live
        entries = audit.page(db, account_id, 200, before)
        recent = [entry for entry in entries if entry["at"] >= since]
        sign_ins += [entry for entry in recent if entry["action"] == "sign_in.succeeded"]
        sign_outs += sum(1 for entry in recent if entry["action"] == "sign_out")
        if len(recent) < len(entries) or len(entries) < 200:
            return OpenSessions(sign_ins, ended, sign_outs)
        before = entries[-1]["seq"]


def active_api_keys(db: Client, account_id: str, now: datetime) -> list[dict[str, Any]]:
    """The account's keys that still work (neither revoked nor expired), newest first, with their last use."""
    return [key for key in api_keys.owned(db, account_id) if key.get("revoked_at") is None and key["expires_at"] > now]


def staff_read(
    db: Client, principal: Principal, account_id: str, what: str, reason: str, address: str | None
) -> dict[str, Any]:
    """The account, for a staff read of `what`; its customer sees in their trail that staff
    looked, and why (clause 1.1(b)), written before the data leaves."""
    account = accounts.load(db, account_id) if fields.ACCOUNT_ID.fullmatch(account_id) else None
    if account is None:
        raise no_such_account()
    _record_staff_read(db, principal, account_id, what, reason, address)
    return account


def verify_trail(db: Client, principal: Principal, account_id: str, reason: str, address: str | None) -> audit.Verdict:
    """Walks the account's whole trail: a staff access its customer sees, like any other."""
    if not fields.ACCOUNT_ID.fullmatch(account_id):
        raise no_such_account()
    _record_staff_read(db, principal, account_id, "audit_trail_verification", reason, address)
    return audit.verify(db, account_id)


def _record_staff_read(
    db: Client, principal: Principal, account_id: str, what: str, reason: str, address: str | None
) -> None:
    audit.record(db, account_id, audit.AuditEvent("staff.read", actor_of(principal), address, reason, {"what": what}))


def no_such_account() -> web.Problem:
    return web.Problem(404, "account-not-found", "Not found", "No such account.")


# --- staff roles ------------------------------------------------------------------------


def set_staff_roles(
    ports: Ports, principal: Principal, account_id: str, roles: list[str], reason: str, address: str | None
) -> None:
    """An admin's change of a user's staff roles (never their own admin role away)."""
    from firebase_admin import auth

    from orderpally.access import staff_roles  # the staff function's; not on the account function's cold start

    if not fields.ACCOUNT_ID.fullmatch(account_id):
        raise web.Problem(404, "user-not-found", "Not found", "No such user.")
    if account_id == principal.account_id and "admin" not in roles:
        raise web.Problem(409, "last-admin-guard", "Not possible", "Admins cannot remove their own admin role.")
    try:
        user = auth.get_user(account_id, app=ports.auth_app)
    except auth.UserNotFoundError:
        raise web.Problem(404, "user-not-found", "Not found", "No such user.") from None
    staff_roles.change_roles(ports.db, ports.auth_app, user, roles, actor_of(principal), reason, address)
