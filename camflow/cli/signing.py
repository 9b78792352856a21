"""``camflow keys`` (list, add, rotate, retire the token signing keys) and the edge's JWT flags.

``keys`` edits the keys file (``CAMFLOW_SECRET_FILE``, else ``<data-dir>/secret``) atomically; the
services re-read it within ``camflow.signing.RELOAD_INTERVAL`` seconds, without a restart. It
prints key ids, never secrets.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from camflow.errors import ConfigError
from camflow.signing import LEGACY_KID, KeySet, read_file, write_file
from camflow.tokens import SECRET_ENV, SECRET_FILE, SECRET_FILE_ENV, load_keys

if TYPE_CHECKING:
    from edge.idp import JwtSettings

JWKS_REFRESH = 300.0


def add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], data_dir: str) -> None:
    keys = sub.add_parser(
        "keys",
        help="list, add, rotate and retire the token signing keys (ids only, never secrets)",
        description="Edits the keys file (CAMFLOW_SECRET_FILE, else DATA_DIR/secret); running services "
        "re-read it within 2 s. Rotation: `add` a key where several nodes verify (wait until each has "
        "it), `rotate` it to current, then `retire` the old key once its tokens are replaced.",
    )
    keys.add_argument(
        "verb",
        choices=["list", "add", "rotate", "retire"],
        help="list: ids and status (current, verifies, retired); add [KID]: a new key that verifies, "
        "does not sign yet; rotate [KID]: make KID (an added key) or a new key current, the old one "
        "keeps verifying; retire KID: forget a key's secret, its tokens are refused",
    )
    keys.add_argument("kid", nargs="?", help="the key id (add, rotate: default k<YYYYMMDD>-<random>)")
    keys.add_argument("--data-dir", default=data_dir, help="where the keys file is (default ./data)")


def _keys_path(args: argparse.Namespace) -> Path:
    if os.environ.get(SECRET_ENV):
        raise ConfigError(
            f"{SECRET_ENV} holds the keys: edit it (KID:SECRET,KID:SECRET, first signs) and restart the "
            f"services, or keep the keys in a file ({SECRET_FILE_ENV}) that they re-read"
        )
    named = os.environ.get(SECRET_FILE_ENV)
    path = Path(named) if named else Path(args.data_dir) / SECRET_FILE
    if not path.exists():
        raise ConfigError(f"no keys file at {str(path)!r}: `camflow run` makes one on first start")
    return path


def _listing(keys: KeySet) -> str:
    rows = [("KID", "STATUS")]
    for i, key in enumerate(keys.keys):
        status = "current (signs)" if i == 0 else "verifies"
        rows.append((key.kid, status + (", v1 tokens" if key.kid == LEGACY_KID else "")))
    rows += [(kid, "retired") for kid in keys.retired]
    width = max(len(kid) for kid, _ in rows) + 2
    return "\n".join(f"{kid:<{width}}{status}" for kid, status in rows)


def keys_command(args: argparse.Namespace) -> int:
    if args.verb == "list":
        if os.environ.get(SECRET_ENV):
            print(_listing(load_keys(None).keys()))
            return 0
        print(_listing(read_file(_keys_path(args))))
        return 0
    path = _keys_path(args)
    keys = read_file(path)
    if args.verb == "add":
        changed = keys.added(args.kid, current=False)
        kid = changed.keys[-1].kid
        done = f"added key {kid}: it verifies; `camflow keys rotate {kid}` makes it current"
    elif args.verb == "rotate":
        if args.kid and keys.find(args.kid) is not None:
            changed = keys.promoted(args.kid)
        else:
            changed = keys.added(args.kid, current=True)
        done = f"current key {changed.current.kid}; {keys.current.kid} keeps verifying until retired"
    else:
        if not args.kid:
            raise ConfigError("camflow keys retire KID: name the key to retire (camflow keys list)")
        changed = keys.without(args.kid)
        done = f"retired key {args.kid}: its tokens are refused from now on"
    try:
        write_file(path, changed)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the keys file {str(path)!r} ({exc.strerror}): edit it where it comes from "
            "(e.g. the Kubernetes Secret mounted there)"
        ) from None
    print(done)
    return 0


def add_jwt_flags(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument(
        "--jwks-url",
        default=env("CAMFLOW_JWKS_URL"),
        metavar="URL",
        help="accept view JWTs of the identity provider whose keys (JWKS) are at this https URL "
        "(needs --jwt-issuer and --jwt-audience; env CAMFLOW_JWKS_URL; default off)",
    )
    p.add_argument("--jwt-issuer", default=env("CAMFLOW_JWT_ISSUER"), help="the JWTs' iss (required)")
    p.add_argument("--jwt-audience", default=env("CAMFLOW_JWT_AUDIENCE"), help="the JWTs' aud (required)")
    p.add_argument(
        "--jwks-refresh",
        type=float,
        default=JWKS_REFRESH,
        metavar="SECONDS",
        help=f"seconds between two fetches of the JWKS (default {JWKS_REFRESH:g}; an unknown kid "
        "fetches it sooner, at most every 30 s)",
    )


def identity_settings(args: argparse.Namespace) -> JwtSettings | None:
    """The edge's ``identity`` (``edge.idp.JwtSettings``) from the JWT flags; None without --jwks-url."""
    from edge.idp import JwtSettings

    if not args.jwks_url:
        if args.jwt_issuer or args.jwt_audience:
            raise ConfigError("--jwt-issuer and --jwt-audience need --jwks-url (where the JWTs' keys are)")
        return None
    if not args.jwks_refresh > 0:
        raise ConfigError(f"--jwks-refresh {args.jwks_refresh}: expected a positive number of seconds")
    return JwtSettings.parse(args.jwks_url, args.jwt_issuer, args.jwt_audience, args.jwks_refresh)
