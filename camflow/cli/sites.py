"""``camflow regions``: the object stores of several regions linked by MinIO site replication.

``camflow regions link --site A=http://127.0.0.1:28100 --site B=http://127.0.0.1:28200 --bucket camflow``
joins the sites (once: sites already linked together are left alone), then makes the bucket on
the first, which replication makes on the others. ``camflow regions status --site ...`` prints
what each site says of its replication. Root credentials from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, shared by every site (``camflow.store.replication``).
"""

from __future__ import annotations

import argparse
import sys

from camflow.errors import ConfigError, StoreUnavailable
from camflow.store.replication import Site, Sites, describe


def _site(text: str) -> Site:
    try:
        return Site.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_regions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    regions = sub.add_parser(
        "regions", help="link the regions' MinIO stores by site replication (active-active), and its status"
    )
    commands = regions.add_subparsers(dest="regions_command", required=True)
    link = commands.add_parser("link", help="link the sites (idempotent), then make --bucket on them")
    status = commands.add_parser("status", help="each site's replication: peers, replicas, queue, errors")
    for parser in (link, status):
        parser.add_argument(
            "--site",
            action="append",
            required=True,
            type=_site,
            metavar="NAME=URL",
            help="a region's MinIO, e.g. A=http://127.0.0.1:28100 (repeat for each region; "
            "credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
        )
    link.add_argument("--bucket", help="a bucket to make once the sites are linked (kept if it exists)")


def regions_command(args: argparse.Namespace) -> int:
    sites = Sites(args.site)
    try:
        if args.regions_command == "link":
            print(f"regions: {sites.link(args.bucket)}", flush=True)
            return 0
        failed = 0
        for site in sites.sites:
            try:
                lines = describe(site, sites.status(site))
            except StoreUnavailable as exc:
                lines, failed = [f"{site.name} {site.url}: unavailable ({exc})"], 1
            print("\n".join(lines), flush=True)
        return failed
    except StoreUnavailable as exc:
        print(f"camflow regions: {exc}", file=sys.stderr)
        return 1
