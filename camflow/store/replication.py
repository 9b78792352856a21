"""MinIO site replication: the object stores of several regions linked active-active.

Every site (one region's MinIO) holds every bucket and object of the others: a bucket made on one
is made on all, an object written on any is copied to the others in the background, and a site
that was away catches up on what it missed when it is back (MinIO's own resync, no copy loop of
ours). A site that does not hold an object yet answers a read of it by fetching it from a peer
(a proxied read): an object is a replica of a site only once its ``x-amz-replication-status`` there
is ``REPLICA``.

``link`` joins the sites through the MinIO admin API (``mc admin replicate add``); it is idempotent:
sites that already replicate among themselves are left as they are. The sites must share root
credentials (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, as the store reads them), and all but
one must hold no bucket when they are first linked: make buckets after ``link`` (``--bucket``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio, MinioAdmin
from minio.credentials.providers import StaticProvider
from minio.datatypes import PeerSite, SiteReplicationStatusOptions
from minio.error import MinioAdminException, S3Error

from camflow.errors import ConfigError, StoreUnavailable
from camflow.store.s3 import is_unavailable

T = TypeVar("T")
REPLICA = "REPLICA"  # x-amz-replication-status of an object a peer site replicated here
STATUS_HEADER = "X-Amz-Replication-Status"


@dataclass(frozen=True)
class Site:
    """One region's MinIO: a name (the region) and its endpoint, ``http(s)://HOST:PORT``."""

    name: str
    url: str

    @classmethod
    def parse(cls, text: str) -> Site:
        """``NAME=http(s)://HOST:PORT`` (a path, e.g. a bucket, is not part of a site)."""
        name, sep, url = text.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        parts = urlsplit(url)
        if not sep or not name or parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                f"site {text!r}: expected NAME=http(s)://HOST:PORT, e.g. A=http://127.0.0.1:9000"
            )
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"site name {name!r}: expected letters, digits, '-' or '_'")
        return cls(name, url)

    @property
    def endpoint(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def secure(self) -> bool:
        return self.url.startswith("https://")


@dataclass(frozen=True)
class Linked:
    """What one site says of its site replication (``mc admin replicate info``)."""

    enabled: bool
    name: str  # this site's own name among its peers ("" when not enabled)
    sites: dict[str, str]  # every site of the group, this one included: name -> endpoint URL

    @classmethod
    def parse(cls, text: str) -> Linked:
        try:
            data = json.loads(text)
            sites = {str(s["name"]): str(s["endpoint"]).rstrip("/") for s in data.get("sites") or ()}
            return cls(bool(data.get("enabled")), str(data.get("name") or ""), sites)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(
                f"site replication info not of the expected form ({exc}): {text[:200]!r}"
            ) from None


def plan(sites: Sequence[Site], linked: Mapping[str, Linked]) -> bool:
    """Whether ``sites`` still need linking, given what each says (``linked``, by site name).

    False when every site already replicates with exactly these sites under these names; a
    ConfigError when one replicates with another group (linking again would not undo that)."""
    if len(sites) < 2:
        raise ConfigError(f"site replication needs two sites or more, got {len(sites)}")
    names = [s.name for s in sites]
    if len(set(names)) != len(names) or len({s.url for s in sites}) != len(sites):
        raise ConfigError(
            f"sites {', '.join(f'{s.name}={s.url}' for s in sites)}: names and URLs must differ"
        )
    wanted = {s.name: s.url for s in sites}
    if all(linked[s.name].enabled and linked[s.name].sites == wanted for s in sites):
        return False
    for site in sites:
        info = linked[site.name]
        if info.enabled and info.sites != wanted:
            others = ", ".join(f"{n}={u}" for n, u in sorted(info.sites.items()))
            raise ConfigError(
                f"site {site.name} ({site.url}) already replicates with {others}: remove it from that "
                "group first (mc admin replicate rm), or start its MinIO on empty data"
            )
    return True


def credentials(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The root credentials every site shares, from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    env = os.environ if environ is None else environ
    access, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access or not secret:
        raise ConfigError(
            "site replication needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
        )
    return access, secret


def _http() -> urllib3.PoolManager:
    # Short: an admin call to a site that is away fails in seconds, with its name, not in minutes.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=30.0),
        retries=urllib3.Retry(total=1, connect=0, backoff_factor=0),
    )


class Sites:
    """The admin and S3 clients of a set of sites (blocking calls: a command, a test, a script)."""

    def __init__(self, sites: Sequence[Site], environ: Mapping[str, str] | None = None) -> None:
        self.sites = tuple(sites)
        self._access, self._secret = credentials(environ)
        provider = StaticProvider(self._access, self._secret)
        self._admin = {
            s.name: MinioAdmin(
                endpoint=s.endpoint, credentials=provider, secure=s.secure, http_client=_http()
            )
            for s in self.sites
        }
        self._s3 = {
            s.name: Minio(s.endpoint, self._access, self._secret, secure=s.secure, http_client=_http())
            for s in self.sites
        }

    def _call(self, site: Site, what: str, call: Callable[..., T], *args: Any) -> T:
        try:
            return call(*args)
        except MinioAdminException as exc:
            status = int(exc._code) if str(exc._code).isdigit() else 0
            if status >= 500 or status == 429:
                raise StoreUnavailable(f"site {site.name} ({site.url}): {what}: {exc}") from exc
            raise ConfigError(f"site {site.name} ({site.url}): {what} refused: {exc}") from exc
        except S3Error as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(f"site {site.name} ({site.url}): {what}: {exc}") from exc
            raise ConfigError(f"site {site.name} ({site.url}): {what} refused: {exc}") from exc
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(
                    f"site {site.name} ({site.url}) cannot be reached: {what}: {exc}"
                ) from exc
            raise

    def info(self, site: Site) -> Linked:
        return Linked.parse(
            self._call(site, "replication info", self._admin[site.name].get_site_replication_info)
        )

    def link(self, bucket: str | None = None) -> str:
        """Link the sites (unless they already are), then make ``bucket`` (made on one site after
        the link, so replication makes it on the others). Returns what was done, for a person."""
        linked = {s.name: self.info(s) for s in self.sites}
        names = ", ".join(f"{s.name}={s.url}" for s in self.sites)
        if plan(self.sites, linked):
            peers = [PeerSite(s.name, s.url, self._access, self._secret) for s in self.sites]
            first = self.sites[0]
            answer = self._call(
                first, "add site replication", self._admin[first.name].add_site_replication, peers
            )
            done = f"linked {names} ({_status_text(answer)})"
        else:
            done = f"already linked: {names}"
        if bucket:
            first = self.sites[0]
            if self.has_bucket(first, bucket):
                done += f"; bucket {bucket} exists"
            else:
                self._call(first, f"make bucket {bucket}", self._s3[first.name].make_bucket, bucket)
                done += f"; bucket {bucket} made on {first.name}, replicated to the others"
        return done

    def status(self, site: Site) -> dict[str, Any]:
        """The site's replication status: its peers and its replication metrics (as MinIO says)."""
        options = SiteReplicationStatusOptions(buckets=True, metrics=True)
        text = self._call(
            site, "replication status", self._admin[site.name].get_site_replication_status, options
        )
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError:
            raise ConfigError(f"site {site.name}: replication status not JSON: {text[:200]!r}") from None
        return data

    def has_bucket(self, site: Site, bucket: str) -> bool:
        return self._call(site, f"bucket {bucket}", self._s3[site.name].bucket_exists, bucket)

    def replica(self, site: Site, bucket: str, key: str) -> bool:
        """Whether ``site`` holds ``key`` as a replica of a peer's write (not a read it would proxy)."""
        try:
            stat = self._s3[site.name].stat_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                return False
            raise
        return str((stat.metadata or {}).get(STATUS_HEADER, "")).upper() == REPLICA


def _status_text(answer: str) -> str:
    try:
        return str(json.loads(answer).get("status") or answer)
    except (ValueError, AttributeError):
        return answer


def describe(site: Site, status: Mapping[str, Any]) -> list[str]:
    """A few lines for a person from a site's replication status (``Sites.status``)."""
    if not status.get("Enabled"):
        return [f"{site.name} {site.url}: site replication off"]
    peers = status.get("Sites") or {}
    names = sorted(f"{p.get('name')}={p.get('endpoint')}" for p in peers.values() if isinstance(p, dict))
    metrics = status.get("Metrics") or {}
    queued = ((metrics.get("queued") or {}).get("curr") or {}).get("count", 0)
    errors = (metrics.get("errors") or {}).get("total", 0)
    lines = [f"{site.name} {site.url}: replicating with {', '.join(names)}"]
    lines.append(
        f"  replicas received {metrics.get('replicaCount', 0)} ({metrics.get('replicaSize', 0)} bytes), "
        f"queued now {queued}, errors {errors}"
    )
    return lines
