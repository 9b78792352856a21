"""S3Store: MinIO, AWS S3 or any S3-compatible server (minio client, path-style addressing).

Location as a URL: ``http(s)://HOST:PORT/BUCKET[/PREFIX]``. A recording's media objects
(``camflow.keys.ages_out``) are written tagged ``camflow-retention=expire``, the tag the lifecycle
backstop (``set_expiration``) selects; retention switches it to ``locked`` for an event's footage.
Credentials come from the usual ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment
variables and the region from ``AWS_REGION`` (default ``us-east-1``); never from flags. The
bucket is created on start when it does not exist.

TLS: an ``https://`` location is verified against the system's trust store, or against a CA bundle
(PEM) named by ``CAMFLOW_S3_CA_FILE``, else by ``AWS_CA_BUNDLE`` (the variable the AWS CLI and SDKs
read), for a store whose certificate a private CA signed. The certificate must name the host of
the location; ``CAMFLOW_S3_CA_FILE`` with an ``http://`` location is refused (it would not be used).

A call that fails because the server cannot be reached, times out, or answers that it cannot
serve now (5xx, ``SlowDown``) raises ``StoreUnavailable``: the caller decides whether to wait for
the store (the transcoder and packager do, ``camflow.store.retry``) or to say so (the edge, 503).
The HTTP client itself only repeats a request once, at once (a pooled connection the server had
closed); riding out an outage is the retry policy's job, in one place.
"""

from __future__ import annotations

import asyncio
import io
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.error import InvalidResponseError, S3Error, ServerError

from camflow.errors import ConfigError, NotFound, StoreUnavailable
from camflow.keys import ages_out, is_safe_key
from camflow.store.base import ObjectInfo, check_key

T = TypeVar("T")
CA_FILE = "CAMFLOW_S3_CA_FILE"
AWS_CA_BUNDLE = "AWS_CA_BUNDLE"
RETENTION_TAG = "camflow-retention"  # on recording objects: EXPIRE (the lifecycle rule may) or LOCKED
EXPIRE, LOCKED = "expire", "locked"
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}
# Error codes that say "not now" rather than "no": the same request may succeed later.
_NOT_NOW = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (from the minio client) means the store cannot serve now: no connection, a
    timeout, a 5xx or 429 answer, a slow-down. A 4xx answer (denied, bad request) is not."""
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):  # refused, reset, timed out, retries spent
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500 or exc.status_code == 429
    if isinstance(exc, InvalidResponseError):  # a non-XML answer (a proxy's error page)
        status = getattr(exc, "_code", 0)
        return isinstance(status, int) and (status >= 500 or status == 429)
    if isinstance(exc, S3Error):
        return exc.code in _NOT_NOW or exc.response.status >= 500 or exc.response.status == 429
    return False


@dataclass(frozen=True)
class S3Location:
    endpoint: str
    secure: bool
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"S3 location {url!r} is not of the form http(s)://HOST:PORT/BUCKET[/PREFIX]")
        path = parts.path.strip("/")
        bucket, _, prefix = path.partition("/")
        if not bucket:
            raise ConfigError(f"S3 location {url!r} names no bucket: expected http(s)://HOST:PORT/BUCKET")
        return cls(parts.netloc, parts.scheme == "https", bucket, prefix.strip("/"))


def tls_context(location: S3Location, environ: Mapping[str, str] | None = None) -> ssl.SSLContext | None:
    """The TLS context of an https location: the system's CAs, or those of ``CAMFLOW_S3_CA_FILE``
    (else ``AWS_CA_BUNDLE``); None for http. A CA file that cannot be loaded is a ConfigError."""
    env = os.environ if environ is None else environ
    name = CA_FILE if env.get(CA_FILE, "").strip() else AWS_CA_BUNDLE
    path = env.get(name, "").strip()
    if not location.secure:
        if name == CA_FILE and path:
            raise ConfigError(
                f"{CA_FILE}={path} is set but the S3 location is http://{location.endpoint}: "
                "expected an https:// location (or unset it)"
            )
        return None
    try:
        context = ssl.create_default_context(cafile=path or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{name}={path}: not a readable PEM CA bundle ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def untrusted_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed somewhere in ``exc``'s chain (urllib3 wraps it twice), if any."""
    seen: list[BaseException] = [exc]
    for _ in range(8):  # bounded: MaxRetryError -> SSLError -> SSLCertVerificationError
        if not seen:
            return None
        current = seen.pop()
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        nested = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        seen.extend(n for n in nested if isinstance(n, BaseException))
    return None


class S3Store:
    def __init__(self, location: S3Location, pool_size: int = 32) -> None:
        access = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise ConfigError("S3 store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
        self.location = location
        http = urllib3.PoolManager(
            maxsize=pool_size,
            ssl_context=tls_context(location),
            # A hung server (it accepts, never answers) is an outage after two read timeouts (20 s):
            # a repeat costs nothing (deterministic keys), a long wait hides the outage.
            timeout=urllib3.Timeout(connect=5.0, read=10.0),
            retries=urllib3.Retry(total=1, backoff_factor=0, respect_retry_after_header=False),
        )
        self._client = Minio(
            location.endpoint,
            access_key=access,
            secret_key=secret,
            secure=location.secure,
            region=os.environ.get("AWS_REGION", "us-east-1"),
            http_client=http,
        )

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in a thread; a failure meaning "not now" raised as ``StoreUnavailable``."""
        try:
            return await asyncio.to_thread(call, *args)
        except Exception as exc:
            failed = untrusted_certificate(exc) if self.location.secure else None
            if failed is not None:  # not an outage: waiting does not make the certificate trusted
                env = os.environ
                trust = next(
                    (f"{n}={env[n]}" for n in (CA_FILE, AWS_CA_BUNDLE) if env.get(n, "").strip()), None
                )
                raise ConfigError(
                    f"store https://{self.location.endpoint}: its certificate is not trusted by "
                    f"{trust or f'the system trust store ({CA_FILE} / {AWS_CA_BUNDLE} unset)'}: "
                    f"{failed.verify_message or failed}"
                ) from exc
            if is_unavailable(exc):
                raise StoreUnavailable(f"store {self.location.endpoint} unavailable: {exc!r}") from exc
            raise

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _start(self) -> None:
        if not self._client.bucket_exists(self.location.bucket):
            try:
                self._client.make_bucket(self.location.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def start(self) -> None:
        await self._run(self._start)

    async def close(self) -> None:
        return None

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await self._run(self._put, key, data, content_type)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        tags = _retention_tags(EXPIRE) if ages_out(key) else None
        self._client.put_object(
            self.location.bucket, self._k(key), io.BytesIO(data), len(data), content_type, tags=tags
        )

    async def set_locked(self, keys: Iterable[str], locked: bool) -> int:
        """Tag the recording objects ``keys`` as locked (the lifecycle rule leaves them) or as
        expiring again; returns how many were tagged (a key that is gone is passed over)."""
        return await self._run(self._set_locked, list(keys), locked)

    def _set_locked(self, keys: list[str], locked: bool) -> int:
        tags = _retention_tags(LOCKED if locked else EXPIRE)
        done = 0
        for key in keys:
            try:
                self._client.set_object_tags(self.location.bucket, self._k(key), tags)
                done += 1
            except S3Error as exc:
                if exc.code not in _MISSING:
                    raise
        return done

    def locked(self, key: str) -> bool:
        """Whether the object carries the lock tag (tests and operators)."""
        tags = self._client.get_object_tags(self.location.bucket, self._k(key))
        return tags is not None and tags.get(RETENTION_TAG) == LOCKED

    def _get(self, key: str) -> bytes:
        try:
            resp = self._client.get_object(self.location.bucket, self._k(key))
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"no object at key {key!r}") from exc
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    async def get(self, key: str) -> bytes:
        return await self._run(self._get, key)

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._client.stat_object(self.location.bucket, self._k(key))
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise
        modified = st.last_modified.timestamp() if st.last_modified else 0.0
        return ObjectInfo(key=key, size=int(st.size or 0), etag=str(st.etag or ""), last_modified=modified)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._run(self._head, key)

    def _children(self, prefix: str) -> list[str]:
        if prefix and not is_safe_key(prefix.rstrip("/")):
            check_key(prefix)
        full = f"{self.location.prefix}/{prefix}" if self.location.prefix else prefix
        names = (
            str(o.object_name)[len(full) :].rstrip("/")
            for o in self._client.list_objects(self.location.bucket, prefix=full, recursive=False)
            if o.is_dir
        )
        return sorted(n for n in names if n)

    async def children(self, prefix: str) -> list[str]:
        return await self._run(self._children, prefix)

    def _list(self, prefix: str) -> list[str]:
        if prefix and not is_safe_key(prefix.rstrip("/")):
            check_key(prefix)
        full = f"{self.location.prefix}/{prefix}" if self.location.prefix else prefix
        strip = len(self.location.prefix) + 1 if self.location.prefix else 0
        return sorted(
            str(o.object_name)[strip:]
            for o in self._client.list_objects(self.location.bucket, prefix=full, recursive=True)
        )

    async def list(self, prefix: str) -> list[str]:
        return await self._run(self._list, prefix)

    async def delete(self, key: str) -> None:
        await self._run(self._client.remove_object, self.location.bucket, self._k(key))

    def _set_expiration(self, prefix: str, days: int) -> None:
        from minio.commonconfig import ENABLED, AndOperator, Filter
        from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

        full = f"{self.location.prefix}/{prefix}" if self.location.prefix else prefix
        rule_id = f"camflow-expire-{full}".replace("/", "-")[:255]
        try:
            current = self._client.get_bucket_lifecycle(self.location.bucket)
        except S3Error as exc:
            if exc.code != "NoSuchLifecycleConfiguration":
                raise
            current = None
        rules = [r for r in (current.rules if current else []) if r.rule_id != rule_id]
        expire = Expiration(days=days)
        only = Filter(and_operator=AndOperator(full, _retention_tags(EXPIRE)))  # never a locked object
        rules.append(Rule(ENABLED, rule_filter=only, rule_id=rule_id, expiration=expire))
        self._client.set_bucket_lifecycle(self.location.bucket, LifecycleConfig(rules))

    async def set_expiration(self, prefix: str, days: int) -> None:
        """A bucket lifecycle rule: the recording objects under ``prefix`` (``ages_out``, tagged
        ``camflow-retention=expire`` as they are written) expire ``days`` after their last write;
        the ones retention locked for an event (tagged ``locked``) stay.

        Other rules of the bucket are kept; this prefix's rule is replaced.
        """
        check_key(prefix.rstrip("/"))
        if days < 1:
            raise ConfigError(f"lifecycle expiration of {days} days: expected a whole number >= 1")
        await self._run(self._set_expiration, prefix, days)


def _retention_tags(value: str) -> Tags:
    tags = Tags.new_object_tags()
    tags[RETENTION_TAG] = value
    return tags
