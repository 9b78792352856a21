"""Viewer and operator tokens at the edge: HMAC checks memoised, and who is watching what.

Verifying a token costs an HMAC and a JSON parse; a player sends the same token hundreds of
times, so a valid token's claims are remembered (bounded) and later requests only compare the
stream, the action and the expiry. A token that fails is never remembered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from camflow.tokens import Action, Claims, TokenScopeError, TokenSigner

OPERATOR_SCOPE = "*"  # the stream claim of an admin token: every stream
MEMO_SIZE = 10_000
VIEWER_WINDOW = 30.0  # seconds a viewer counts after its last playlist request
VIEWERS_PER_STREAM = 100_000


class Authorizer:
    def __init__(self, signer: TokenSigner, *, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self._clock = clock
        self._memo: OrderedDict[str, Claims] = OrderedDict()

    def verify(self, token: str, stream: str, action: Action) -> Claims:
        """Claims of a valid token for (stream, action); raises ``TokenError`` naming why not."""
        claims = self._memo.get(token)
        if claims is None or 0 < claims.expires <= self._clock():  # 0: a token that never expires
            return self._verify_and_remember(token, stream, action)
        if claims.stream != stream:
            raise TokenScopeError(f"token is for stream {claims.stream!r}, not {stream!r}")
        if claims.action != action:
            raise TokenScopeError(f"token allows {claims.action.value!r}, not {action.value!r}")
        return claims

    def _verify_and_remember(self, token: str, stream: str, action: Action) -> Claims:
        self._memo.pop(token, None)
        claims = self.signer.verify(token, stream, action, now=self._clock())
        self._memo[token] = claims
        if len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return claims

    def verify_viewer(self, token: str, stream: str) -> Claims:
        """A view token for ``stream``, or an operator (admin) token, which may watch every stream."""
        try:
            return self.verify(token, stream, Action.VIEW)
        except TokenScopeError:
            try:
                return self.verify(token, OPERATOR_SCOPE, Action.ADMIN)
            except TokenScopeError:
                pass
            raise

    def verify_operator(self, token: str) -> Claims:
        return self.verify(token, OPERATOR_SCOPE, Action.ADMIN)


class ViewerCounter:
    """Distinct viewers (tokens, or client addresses without one) per stream over the last 30 s."""

    def __init__(self, *, window: float = VIEWER_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def saw(self, stream: str, who: str) -> None:
        seen = self._seen.setdefault(stream, OrderedDict())
        seen[who] = self._clock()
        seen.move_to_end(who)
        if len(seen) > VIEWERS_PER_STREAM:
            seen.popitem(last=False)

    def count(self, stream: str) -> int:
        self.prune()
        return len(self._seen.get(stream, ()))

    def prune(self) -> None:
        horizon = self._clock() - self.window
        for stream in list(self._seen):
            seen = self._seen[stream]
            while seen:
                who, at = next(iter(seen.items()))
                if at >= horizon:
                    break
                del seen[who]
            if not seen:
                del self._seen[stream]
