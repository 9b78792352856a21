"""edge.auth: memoised token checks (the same verdicts as TokenSigner), admin tokens, viewer counts."""

from __future__ import annotations

import pytest

from camflow.errors import TokenError
from camflow.tokens import Action, TokenExpired, TokenScopeError, TokenSigner
from edge.auth import OPERATOR_SCOPE, Authorizer, ViewerCounter

SECRET = b"edge-auth-secret-0123456789"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_admin_action_round_trips() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(OPERATOR_SCOPE, Action.ADMIN, ttl=60)
    claims = signer.verify(token, OPERATOR_SCOPE, Action.ADMIN)
    assert claims.action is Action.ADMIN and claims.stream == "*"
    with pytest.raises(TokenScopeError, match="'admin', not 'view'"):
        signer.verify(token, OPERATOR_SCOPE, Action.VIEW)


def test_memoised_verdicts_match_the_signer_for_scope_and_expiry() -> None:
    signer = TokenSigner(SECRET)
    clock = Clock(1_000_000.0)
    auth = Authorizer(signer, clock=clock)
    token = signer.issue("cam1", Action.VIEW, ttl=10, now=clock.now)
    assert auth.verify(token, "cam1", Action.VIEW).stream == "cam1"
    assert auth.verify(token, "cam1", Action.VIEW).stream == "cam1"  # from the memo
    with pytest.raises(TokenScopeError, match="'cam1', not 'cam2'"):
        auth.verify(token, "cam2", Action.VIEW)
    with pytest.raises(TokenScopeError, match="'view', not 'publish'"):
        auth.verify(token, "cam1", Action.PUBLISH)
    clock.now += 11
    with pytest.raises(TokenExpired):
        auth.verify(token, "cam1", Action.VIEW)
    with pytest.raises(TokenError):
        auth.verify(token[:-2] + "xx", "cam1", Action.VIEW)


def test_viewers_may_use_an_admin_token_but_not_the_other_way_round() -> None:
    signer = TokenSigner(SECRET)
    auth = Authorizer(signer)
    admin = signer.issue(OPERATOR_SCOPE, Action.ADMIN, ttl=60)
    view = signer.issue("cam1", Action.VIEW, ttl=60)
    assert auth.verify_viewer(admin, "cam7").action is Action.ADMIN
    assert auth.verify_viewer(view, "cam1").action is Action.VIEW
    with pytest.raises(TokenScopeError):
        auth.verify_viewer(view, "cam2")
    with pytest.raises(TokenScopeError):
        auth.verify_operator(view)
    with pytest.raises(TokenScopeError):
        auth.verify_viewer(signer.issue("cam1", Action.PUBLISH, ttl=60), "cam1")


def test_viewer_counter_counts_distinct_recent_viewers() -> None:
    clock = Clock(100.0)
    viewers = ViewerCounter(window=30, clock=clock)
    for who in ("a", "b", "a"):
        viewers.saw("cam1", who)
    viewers.saw("cam2", "a")
    assert viewers.count("cam1") == 2 and viewers.count("cam2") == 1
    clock.now += 20
    viewers.saw("cam1", "b")
    clock.now += 15
    assert viewers.count("cam1") == 1 and viewers.count("cam2") == 0
    assert viewers.count("nobody") == 0
