"""Viewer and operator tokens at the edge: checks memoised, and who is watching what.

Verifying a token costs an HMAC and a JSON parse (a JWT: a public-key signature check); a player
sends the same token hundreds of times, so a valid token's grant is remembered (bounded) and later
requests only compare the stream, the action and the expiry. A token that fails is never
remembered, and every remembered one is forgotten when a key changes (a rotation, a retirement, a
new JWKS).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from camflow.errors import TokenError
from camflow.signing import KeySet
from camflow.tokens import Action, Claims, TokenScopeError, TokenSigner
from edge.idp import IdentityProvider, UnknownJwtKey, looks_like_jwt

OPERATOR_SCOPE = "*"  # the stream claim of an admin token: every stream
MEMO_SIZE = 10_000
VIEWER_WINDOW = 30.0  # seconds a viewer counts after its last playlist request
VIEWERS_PER_STREAM = 100_000
CENSUS_TTL = 1.0  # seconds a census of the other workers' viewers is reused
PEERS_KEEP = 10.0  # seconds the other workers' viewers count without a new census


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows (a camflow token: one stream and action; a JWT: view streams)."""

    streams: frozenset[str]
    action: Action
    expires: float  # UNIX seconds; 0 = never
    jwt: bool = False
    every_stream: bool = False  # a JWT with camflow:view:*


class Authorizer:
    """Checks tokens, remembering valid ones; forgets them all when a signing key or the JWKS changes
    (``refresh``), so a token of a retired key is refused from the next request on."""

    def __init__(
        self,
        signer: TokenSigner,
        *,
        identity: IdentityProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.identity = identity
        self._clock = clock
        self._memo: OrderedDict[str, Grant] = OrderedDict()
        self._keys: KeySet = signer.keys()
        self._jwks: object = None if identity is None else identity.keys
        self.epoch = 0  # bumped each time the memo is forgotten for a key change

    def refresh(self) -> int:
        """The keys' epoch: bumped, and every remembered token forgotten, when the signing keys (a
        keys file re-read) or the identity provider's JWKS changed since the last call."""
        keys = self.signer.keys()
        jwks = None if self.identity is None else self.identity.keys
        if keys is not self._keys or jwks is not self._jwks:
            self._keys, self._jwks = keys, jwks
            self._memo.clear()
            self.epoch += 1
        return self.epoch

    def verify(self, token: str, stream: str, action: Action) -> Claims:
        """Claims of a valid token for (stream, action); raises ``TokenError`` naming why not."""
        self.refresh()
        grant = self._memo.get(token)
        if grant is None or 0 < grant.expires <= self._clock():  # 0: a token that never expires
            grant = self._verify_and_remember(token)
        if grant.jwt:
            if action is not Action.VIEW:
                raise TokenScopeError(f"a JWT allows 'view' only, not {action.value!r}")
            if not grant.every_stream and stream not in grant.streams:
                raise TokenScopeError(f"JWT scope grants streams {sorted(grant.streams)}, not {stream!r}")
        else:
            if stream not in grant.streams:
                raise TokenScopeError(f"token is for stream {next(iter(grant.streams))!r}, not {stream!r}")
            if grant.action != action:
                raise TokenScopeError(f"token allows {grant.action.value!r}, not {action.value!r}")
        return Claims(stream=stream, action=action, expires=grant.expires)

    def _verify_and_remember(self, token: str) -> Grant:
        self._memo.pop(token, None)
        if looks_like_jwt(token):
            if self.identity is None:
                raise TokenError("token is a JWT, and this edge takes none (it runs without --jwks-url)")
            view = self.identity.verify(token)
            grant = Grant(view.streams, Action.VIEW, view.expires, jwt=True, every_stream=view.every_stream)
        else:
            claims = self.signer.verify_any(token, now=self._clock())
            grant = Grant(frozenset((claims.stream,)), claims.action, claims.expires)
        self._memo[token] = grant
        if len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return grant

    def verify_viewer(self, token: str, stream: str) -> Claims:
        """A view token (or a JWT) for ``stream``, or an operator (admin) token: it watches every stream."""
        try:
            return self.verify(token, stream, Action.VIEW)
        except TokenScopeError:
            try:
                return self.verify(token, OPERATOR_SCOPE, Action.ADMIN)
            except TokenScopeError:
                pass
            raise

    async def verify_viewer_learning(self, token: str, stream: str) -> Claims:
        """``verify_viewer``; for a JWT signed with a key id the JWKS did not have, the JWKS is
        fetched again first (rate-limited by ``IdentityProvider.learn``)."""
        try:
            return self.verify_viewer(token, stream)
        except UnknownJwtKey as exc:
            if self.identity is None or not await self.identity.learn(exc.kid):
                raise
            return self.verify_viewer(token, stream)

    def verify_operator(self, token: str) -> Claims:
        return self.verify(token, OPERATOR_SCOPE, Action.ADMIN)


class ViewerPeers(Protocol):
    """The other worker processes of this edge (``edge.metrics.WorkerMetrics``)."""

    async def viewer_identities(self) -> list[dict[str, list[str]]]:
        """Each answering worker's ``ViewerCounter.identities()``; [] when this process is alone."""
        ...


def viewer_identity(who: str) -> str:
    """What a viewer is known by outside this process: a hash, never the token (or address) itself."""
    return hashlib.blake2b(who.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


class ViewerCounter:
    """Distinct viewers (tokens, or client addresses without one) per stream over the last 30 s.

    With ``camflow edge --workers N`` a viewer's requests reach several processes: ``count`` is the
    whole edge's figure, this process's viewers united with the other workers' (``peers``) as of
    the last ``census()`` (taken when asked, at most once per ``CENSUS_TTL``; the peers' part is
    dropped after ``PEERS_KEEP`` without a new census). Viewers cross the process boundary as
    ``viewer_identity`` hashes.
    """

    def __init__(
        self,
        *,
        window: float = VIEWER_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        peers: ViewerPeers | None = None,
    ) -> None:
        self.window = window
        self.peers = peers
        self._clock = clock
        self._seen: dict[str, OrderedDict[str, tuple[float, str]]] = {}  # who -> (last seen, identity)
        self._peer_ids: dict[str, set[str]] = {}
        self._census_at: float | None = None
        self._census_lock = asyncio.Lock()

    def saw(self, stream: str, who: str) -> None:
        seen = self._seen.setdefault(stream, OrderedDict())
        known = seen.get(who)
        seen[who] = (self._clock(), viewer_identity(who) if known is None else known[1])
        seen.move_to_end(who)
        if len(seen) > VIEWERS_PER_STREAM:
            seen.popitem(last=False)

    def count(self, stream: str) -> int:
        """Distinct viewers of ``stream`` on the whole edge (every worker, as of the last census)."""
        self.prune()
        seen = self._seen.get(stream)
        if self._census_at is None or self._clock() - self._census_at > PEERS_KEEP:
            self._peer_ids.clear()
        others = self._peer_ids.get(stream)
        if not others:
            return 0 if seen is None else len(seen)
        return len(others.union(identity for _, identity in (seen or {}).values()))

    def local_count(self, stream: str) -> int:
        """Distinct viewers of ``stream`` whose requests reached this process."""
        self.prune()
        return len(self._seen.get(stream, ()))

    def identities(self) -> dict[str, list[str]]:
        """This process's viewers of every stream, as ``viewer_identity`` hashes (for the peers)."""
        self.prune()
        return {stream: [identity for _, identity in seen.values()] for stream, seen in self._seen.items()}

    async def census(self) -> None:
        """Ask the peers for their viewers, unless a census is younger than ``CENSUS_TTL``; callers
        arriving meanwhile share it. A peer that does not answer in time counts for nothing."""
        if self.peers is None:
            return
        async with self._census_lock:
            if self._census_at is not None and self._clock() - self._census_at < CENSUS_TTL:
                return
            answers = await self.peers.viewer_identities()
            union: dict[str, set[str]] = {}
            for answer in answers:
                for stream, ids in answer.items():
                    union.setdefault(stream, set()).update(ids)
            self._peer_ids = union
            self._census_at = self._clock()

    def prune(self) -> None:
        horizon = self._clock() - self.window
        for stream in list(self._seen):
            seen = self._seen[stream]
            while seen:
                who, (at, _) = next(iter(seen.items()))
                if at >= horizon:
                    break
                del seen[who]
            if not seen:
                del self._seen[stream]
