"""camflow.store.replication without a MinIO: sites as given on the command line, what a site says
of its replication (MinIO's JSON, as 2026's server answers it), and whether linking is needed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from camflow.cli.args import build_parser
from camflow.errors import ConfigError
from camflow.store.replication import Linked, Site, credentials, describe, plan

A = Site("A", "http://127.0.0.1:28100")
B = Site("B", "http://127.0.0.1:28200")
# What `get_site_replication_info` answered for two linked test sites (deployment ids shortened).
INFO: dict[str, Any] = {
    "enabled": True,
    "name": "A",
    "sites": [
        {"endpoint": "http://127.0.0.1:28100", "name": "A", "deploymentID": "c9f2", "sync": ""},
        {"endpoint": "http://127.0.0.1:28200", "name": "B", "deploymentID": "e67d", "sync": ""},
    ],
    "serviceAccountAccessKey": "site-replicator-0",
}
OFF = Linked.parse('{"enabled":false}')


def test_site_parse() -> None:
    assert Site.parse("A=http://127.0.0.1:28100/") == A
    assert Site.parse("eu-1=https://minio.eu:9000").secure
    assert A.endpoint == "127.0.0.1:28100" and not A.secure


@pytest.mark.parametrize(
    "text",
    ["http://127.0.0.1:28100", "A=", "=http://h:1", "A=ftp://h:1", "A=http://h:1/bucket", "A b=http://h:1"],
)
def test_site_parse_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="site"):
        Site.parse(text)


def test_linked_parse() -> None:
    linked = Linked.parse(json.dumps(INFO))
    assert linked == Linked(True, "A", {"A": A.url, "B": B.url})
    assert Linked(False, "", {}) == OFF
    with pytest.raises(ConfigError, match="expected form"):
        Linked.parse("<html>")


def test_plan_links_fresh_sites_and_leaves_linked_ones() -> None:
    assert plan([A, B], {"A": OFF, "B": OFF})
    linked = Linked.parse(json.dumps(INFO))
    assert not plan([A, B], {"A": linked, "B": linked})
    # One linked already, the other fresh (its data wiped): link again, MinIO takes it.
    assert plan([A, B], {"A": linked, "B": OFF})


def test_plan_refuses_a_site_of_another_group() -> None:
    other = Linked(True, "A", {"A": A.url, "C": "http://127.0.0.1:28300"})
    with pytest.raises(
        ConfigError, match=r"site A .* already replicates with A=.*, C=http://127.0.0.1:28300"
    ):
        plan([A, B], {"A": other, "B": OFF})


def test_plan_refuses_too_few_or_repeated_sites() -> None:
    with pytest.raises(ConfigError, match="two sites or more"):
        plan([A], {"A": OFF})
    with pytest.raises(ConfigError, match="must differ"):
        plan([A, Site("A", B.url)], {"A": OFF})


def test_credentials_from_the_environment() -> None:
    assert credentials({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}) == ("k", "s")
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        credentials({})


def test_describe() -> None:
    status = {
        "Enabled": True,
        "Sites": {"c9f2": INFO["sites"][0], "e67d": INFO["sites"][1]},
        "Metrics": {
            "replicaCount": 3,
            "replicaSize": 30,
            "queued": {"curr": {"count": 1}},
            "errors": {"total": 0},
        },
    }
    assert describe(A, status) == [
        "A http://127.0.0.1:28100: replicating with A=http://127.0.0.1:28100, B=http://127.0.0.1:28200",
        "  replicas received 3 (30 bytes), queued now 1, errors 0",
    ]
    assert describe(B, {"Enabled": False}) == ["B http://127.0.0.1:28200: site replication off"]


def test_regions_command_line() -> None:
    args = build_parser().parse_args(["regions", "link", "--site", f"A={A.url}", "--site", f"B={B.url}"])
    assert (args.regions_command, args.site, args.bucket) == ("link", [A, B], None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["regions", "status", "--site", "nope"])
