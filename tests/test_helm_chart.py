"""The Helm chart (helm/camflow): `helm lint --strict`, `helm template` validated offline against the
Kubernetes schemas (kubernetes-validate), CRDs checked structurally, and every flag the chart passes to
`camflow <service>` checked against the real CLI.

helm comes from `scripts/helm.sh install` (a `go install` build cached under ~/.cache/camflow); a missing
helm is a failure under `make test` / CI (CAMFLOW_REQUIRE_SERVICES=1 or CI=true), a skip elsewhere.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from camflow.cli.args import build_parser
from camflow.events import TOPIC_RAW
from tests import services

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "camflow"
HELM_VERSION = "v3.21.4"
# Kubernetes versions the rendered documents must be valid for: the chart's minimum (kubeVersion
# >=1.30, for the native preStop sleep) and a current one. Pinned, never "latest".
K8S_VERSIONS = ("1.30.0", "1.33.0")
CRD_KINDS = {"PrometheusRule", "ServiceMonitor", "ScaledObject"}
SUBCOMMANDS = {"ingest", "transcode", "package", "edge"}

# Every toggle on, every optional value set (KEDA instead of the CPU HPA: the two exclude each other).
ALL_ON: dict[str, Any] = {
    "kafka": {"topicPrefix": "prod.", "replication": 5},
    "s3": {"prefix": "fleet/a"},
    "secret": {"s3AccessKey": "AKIAEXAMPLE", "s3SecretKey": "secret-example", "tokenSecret": "t" * 64},
    "ingest": {
        "replicas": 1,
        "hostNetwork": True,
        "whip": {"enabled": True, "announceIp": "203.0.113.7", "count": 10},
        "pullSources": {
            "door": "rtsp://admin:door-camera-pass@10.0.0.7:554/stream1",
            "yard": {"url": "rtsp://10.0.0.9/h264", "transport": "udp"},
            "zoo": "rtsp://10.0.0.11/main",  # sorts after a table: must not land inside it
        },
        "extraArgs": ["--rtsp-auth", "digest"],
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
    },
    "transcode": {"autoscaling": {"enabled": False}, "keda": {"enabled": True}},
    "packager": {"retain": "7d", "retainStreams": {"lobby": "1d", "door": "12h"}, "targetDuration": 6},
    "edge": {"playlistMaxAge": 2, "workers": 2, "service": {"type": "LoadBalancer"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    "commonLabels": {"team": "video"},
    "imagePullSecrets": [{"name": "regcred"}],
    "tls": {"secretName": "camflow-tls", "rtspsPort": 8443},
    "region": {"name": "eu-west", "edgeUrl": "https://live.eu-west.example.com"},
}


# --- helm -----------------------------------------------------------------------------------


def helm_binary() -> str:
    """$CAMFLOW_HELM, else scripts/helm.sh's cached build, else `helm` on PATH; fail or skip if none."""
    explicit = os.environ.get("CAMFLOW_HELM")
    cache = Path(os.environ.get("CAMFLOW_CACHE", Path.home() / ".cache" / "camflow"))
    for candidate in (explicit, str(cache / f"helm-{HELM_VERSION}" / "bin" / "helm"), shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = f"helm not found ($CAMFLOW_HELM, {cache}/helm-{HELM_VERSION}/bin/helm, PATH)"
    if services.services_required():
        pytest.fail(f"{message}: `make install` builds it (scripts/helm.sh install)", pytrace=False)
    pytest.skip(f"{message}; build it with `bash scripts/helm.sh install`")


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def values_file(tmp: Path, values: dict[str, Any]) -> Path:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(
    helm: str, tmp: Path, values: dict[str, Any] | None = None, k8s: str = K8S_VERSIONS[-1]
) -> list[Any]:
    args = ["template", "cf", str(CHART), "--namespace", "video", "--kube-version", k8s]
    if values is not None:
        args += ["-f", str(values_file(tmp, values))]
    out = run_helm(helm, *args)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(helm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    tmp = tmp_path_factory.mktemp("helm")
    return {"default": render(helm, tmp), "all_on": render(helm, tmp, ALL_ON)}


def of_kind(docs: list[Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: list[Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in of_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


# --- lint and schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["default", "all_on"])
def test_helm_lint_strict(helm: str, tmp_path: Path, case: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", "video"]
    if case == "all_on":
        args += ["-f", str(values_file(tmp_path, ALL_ON))]
    out = run_helm(helm, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
@pytest.mark.parametrize("case", ["default", "all_on"])
def test_rendered_documents_are_valid_kubernetes(helm: str, tmp_path: Path, case: str, k8s: str) -> None:
    docs = render(helm, tmp_path, ALL_ON if case == "all_on" else None, k8s)
    kinds = {d["kind"] for d in docs}
    expected = {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "PodDisruptionBudget"}
    expected |= {"HorizontalPodAutoscaler"} if case == "default" else CRD_KINDS | {"HorizontalPodAutoscaler"}
    assert expected <= kinds, f"missing kinds: {expected - kinds}"
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] in CRD_KINDS:
            check_crd(doc, docs)  # not in the Kubernetes schemas: checked field by field below
            continue
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is not valid Kubernetes {k8s}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema for {doc['apiVersion']} in Kubernetes {k8s}")


def test_schema_validation_rejects_a_broken_document(rendered: dict[str, list[Any]]) -> None:
    """The validator is strict: a misspelt field and a wrong type are both refused."""
    deployment = copy.deepcopy(of_kind(rendered["default"], "Deployment")[0])
    kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    service = copy.deepcopy(of_kind(rendered["default"], "Service")[0])
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSIONS[0], strict=True)


# --- CRDs, checked structurally --------------------------------------------------------------

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
PROMQL_METRIC = re.compile(r"\b(camflow_[a-z0-9_]+)")


def check_crd(doc: dict[str, Any], docs: list[Any]) -> None:
    kind = doc["kind"]
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, f"{kind}: unexpected top-level keys"
    assert doc["metadata"]["name"] and doc["metadata"]["labels"]
    if kind == "PrometheusRule":
        check_prometheus_rule(doc)
    elif kind == "ServiceMonitor":
        check_service_monitor(doc, docs)
    elif kind == "ScaledObject":
        check_scaled_object(doc, docs)


def check_prometheus_rule(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    groups = doc["spec"]["groups"]
    assert groups and set(doc["spec"]) == {"groups"}
    names = [g["name"] for g in groups]
    assert len(set(names)) == len(names), f"duplicate group names: {names}"
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"], group.get("name")
        for rule in group["rules"]:
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["expr"]
            assert rule["expr"].count("{") == rule["expr"].count("}"), rule["expr"]
            assert "{{" not in rule["expr"], f"unrendered template in {rule}"
            if "record" in rule:  # a recording rule: level:metric:operations (Prometheus' naming)
                assert set(rule) <= {"record", "expr", "labels"}, rule
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
                assert PROMQL_METRIC.search(rule["expr"]), f"{rule['record']} names no camflow metric"
                continue
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            uses = PROMQL_METRIC.search(rule["expr"]) or any(r in rule["expr"] for r in recorded)
            assert uses, f"{rule['alert']} names no camflow metric nor a rule recorded here"


def check_service_monitor(doc: dict[str, Any], docs: list[Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    wanted = spec["selector"]["matchLabels"]
    selected = [s for s in of_kind(docs, "Service") if wanted.items() <= s["metadata"]["labels"].items()]
    assert selected, "the ServiceMonitor selects no Service"
    ports = {p["name"] for svc in selected for p in svc["spec"]["ports"]}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in ports, f"endpoint port {endpoint['port']!r} is on no selected Service"
        assert endpoint["path"] == "/metrics" and DURATION.match(endpoint["interval"])
    components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected}
    assert components == {"ingest", "transcode", "packager", "edge"}, components


def check_scaled_object(doc: dict[str, Any], docs: list[Any]) -> None:
    from transcode.service import GROUP

    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    target = doc["spec"]["scaleTargetRef"]["name"]
    deployment = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == target)
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "transcode"
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert not [
        h for h in of_kind(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == target
    ]
    assert 1 <= doc["spec"]["minReplicaCount"] <= doc["spec"]["maxReplicaCount"]
    (trigger,) = doc["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    prefix = (
        flag_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"], "--kafka-prefix") or ""
    )
    # The same names KafkaBus uses: prefix + group, prefix + topic.
    assert meta["consumerGroup"] == prefix + GROUP
    assert meta["topic"] == prefix + TOPIC_RAW
    assert meta["bootstrapServers"] == flag_value(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"], "--kafka"
    )
    assert int(meta["lagThreshold"]) >= 1


@pytest.mark.parametrize(("case", "wanted"), [("default", "3"), ("all_on", "5")])
def test_every_service_creates_topics_with_the_replication_value(
    rendered: dict[str, list[Any]], case: str, wanted: str
) -> None:
    """Any service may be the first to create the topics: each gets kafka.replication."""
    args = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: c["args"]
        for d, c in containers(rendered[case])
    }
    assert set(args) == {"ingest", "transcode", "packager", "edge"}
    assert {name: flag_value(a, "--kafka-replication") for name, a in args.items()} == dict.fromkeys(
        args, wanted
    )


@pytest.mark.parametrize("case", ["default", "all_on"])
def test_tls_secret_is_mounted_and_served_by_ingest_and_edge(
    rendered: dict[str, list[Any]], case: str
) -> None:
    """tls.secretName: ingest and edge get the Secret and the flags, ingest's RTSP Service the RTSPS
    port, the edge's probes HTTPS; without it nothing of TLS is rendered."""
    tls = case == "all_on"
    for deployment, container in containers(rendered[case]):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        args, volumes = container["args"], deployment["spec"]["template"]["spec"]["volumes"]
        serves = tls and component in ("ingest", "edge")
        assert (flag_value(args, "--tls-cert") == "/etc/camflow-tls/tls.crt") is serves, (component, args)
        assert (flag_value(args, "--tls-key") == "/etc/camflow-tls/tls.key") is serves
        secret = [v["secret"] for v in volumes if "secret" in v and v["name"] == "tls"]
        assert secret == ([{"secretName": "camflow-tls", "defaultMode": 0o440}] if serves else []), secret
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert ("/etc/camflow-tls" in mounts) is serves
        if component == "ingest":
            assert (flag_value(args, "--rtsps-port") == "8443") is tls
            assert ({"name": "rtsps", "containerPort": 8443, "protocol": "TCP"} in container["ports"]) is tls
        if component == "edge":
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"].get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP")
    service = next(s for s in of_kind(rendered[case], "Service") if s["metadata"]["name"].endswith("-rtsp"))
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports.get("rtsps") == (8443 if tls else None), ports


def test_alerts_use_metrics_the_code_exports(rendered: dict[str, list[Any]]) -> None:
    """Every camflow_* name in an alert is defined in the services' code (counters without _total)."""
    (rule,) = of_kind(rendered["all_on"], "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "CamflowStreamStalled",
        "CamflowLiveEdgeLatencyHigh",
        "CamflowConsumerLagGrowing",
        "CamflowEdge5xxRatioHigh",
        "CamflowStoreErrors",
        "CamflowTlsCertificateExpiring",
        "CamflowTlsReloadFailed",
    } <= alerts
    sources = "\n".join(
        p.read_text()
        for pkg in ("camflow", "ingest", "transcode", "packager", "edge")
        for p in (ROOT / pkg).rglob("*.py")
    )
    used = {m for g in rule["spec"]["groups"] for r in g["rules"] for m in PROMQL_METRIC.findall(r["expr"])}
    missing = sorted(m for m in used if re.sub(r"_(total|bucket|count|sum)$", "", m) not in sources)
    assert not missing, f"alerts use metrics no service defines: {missing}"


# --- the flags the chart passes ------------------------------------------------------------


def flag_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices[name]
    return sub


@pytest.mark.parametrize("case", ["default", "all_on"])
def test_every_flag_the_chart_passes_exists(rendered: dict[str, list[Any]], case: str) -> None:
    seen = set()
    for deployment, container in containers(rendered[case]):
        args = [str(a) for a in container["args"]]
        command = args[0]
        assert command in SUBCOMMANDS, f"{deployment['metadata']['name']}: unknown subcommand {command!r}"
        seen.add(command)
        known = {opt for action in subparser(command)._actions for opt in action.option_strings}
        unknown = [a for a in args[1:] if a.startswith("--") and a.split("=")[0] not in known]
        assert not unknown, f"`camflow {command}` has no {unknown} (chart: {deployment['metadata']['name']})"
        # And the whole command line parses, values included (types, choices).
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"`camflow {' '.join(args)}` does not parse (exit {exc.code})")
    assert seen == SUBCOMMANDS


def test_flags_appear_in_camflow_help(rendered: dict[str, list[Any]]) -> None:
    """The real CLI, as a process: `camflow <service> --help` lists every flag the chart passes."""
    for _, container in containers(rendered["all_on"]):
        command, *rest = [str(a) for a in container["args"]]
        out = subprocess.run(
            [sys.executable, "-m", "camflow.cli", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=ROOT,
        )
        for flag in (a for a in rest if a.startswith("--")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", out.stdout), (
                f"`camflow {command} --help` lacks {flag}"
            )


def test_configmap_files_load(rendered: dict[str, list[Any]], tmp_path: Path) -> None:
    """The ladder and the pull sources the chart writes are read by the code that reads them."""
    from ingest.sources.pull.client import load_sources
    from transcode.ladder import load_ladder_file

    (config,) = of_kind(rendered["all_on"], "ConfigMap")
    (tmp_path / "ladder.yaml").write_text(config["data"]["ladder.yaml"])
    assert [r.name for r in load_ladder_file(tmp_path / "ladder.yaml")] == ["source", "720p", "360p"]
    assert "sources.toml" not in config["data"]  # camera passwords: a Secret, not the ConfigMap
    (sources_secret,) = [
        s for s in of_kind(rendered["all_on"], "Secret") if s["metadata"]["name"].endswith("-sources")
    ]
    (tmp_path / "sources.toml").write_text(sources_secret["stringData"]["sources.toml"])
    sources = {s.name: s for s in load_sources(tmp_path / "sources.toml")}
    assert set(sources) == {"door", "yard", "zoo"}
    assert sources["zoo"].url == "rtsp://10.0.0.11/main"
    assert sources["yard"].transport == "udp" and sources["door"].transport == "tcp"


# --- wiring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["default", "all_on"])
def test_probes_services_and_ports_line_up(rendered: dict[str, list[Any]], case: str) -> None:
    docs = rendered[case]
    for deployment, container in containers(docs):
        name = deployment["metadata"]["name"]
        args = [str(a) for a in container["args"]]
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        # The health port is the one the service is told to serve it on.
        health_port = int(flag_value(args, "--metrics-port") or flag_value(args, "--http-port") or 0)
        if args[0] == "edge":
            health_port = int(flag_value(args, "--http-port") or 0)
        for probe, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert ports[get["port"]] == health_port, (
                f"{name} {probe} probes a port the service does not serve"
            )
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30, name
    # Every Service's target port exists on the Deployment it selects, with the same protocol.
    for service in of_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        targets = [
            d
            for d in of_kind(docs, "Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, service["metadata"]["name"]
        cports = targets[0]["spec"]["template"]["spec"]["containers"][0]["ports"]
        for port in service["spec"]["ports"]:
            match = [
                p
                for p in cports
                if (p.get("name") == port["targetPort"] or p["containerPort"] == port["targetPort"])
                and p["protocol"] == port["protocol"]
            ]
            assert match, f"{service['metadata']['name']}: no container port for {port}"


def test_ingest_udp_ports_match_its_flag(rendered: dict[str, list[Any]]) -> None:
    docs = rendered["default"]
    (_, ingest) = next((d, c) for d, c in containers(docs) if c["args"][0] == "ingest")
    first, last = (int(x) for x in str(flag_value(ingest["args"], "--rtsp-udp-ports")).split("-"))
    udp = sorted(p["containerPort"] for p in ingest["ports"] if p["protocol"] == "UDP")
    assert udp == list(range(first, last + 1)) and first % 2 == 0 and (last - first + 1) % 2 == 0
    rtsp = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-rtsp"))
    assert sorted(p["port"] for p in rtsp["spec"]["ports"] if p["protocol"] == "UDP") == udp


def test_edge_has_hpa_pdb_and_prestop(rendered: dict[str, list[Any]]) -> None:
    docs = rendered["default"]
    edge = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-edge"))
    assert edge["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert "replicas" not in edge["spec"], "the HPA owns the replica count"
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {edge["metadata"]["name"], edge["metadata"]["name"].replace("-edge", "-transcode")}
    for hpa in hpas.values():
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_every_service_has_a_pdb_that_selects_its_pods_only(rendered: dict[str, list[Any]]) -> None:
    docs = rendered["default"]
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    pdbs = {p["metadata"]["name"]: p for p in of_kind(docs, "PodDisruptionBudget")}
    assert set(pdbs) == set(deployments) and len(pdbs) == 4, sorted(pdbs)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1
        selected = pdb["spec"]["selector"]["matchLabels"].items()
        chosen = [
            n
            for n, d in deployments.items()
            if selected <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert chosen == [name], (name, chosen)


def test_the_edge_error_budget_burn_alerts(rendered: dict[str, list[Any]]) -> None:
    """Multi-window, multi-burn-rate: 14.4x over 1 h and 5 min pages, 6x over 6 h and 30 min does
    not; both windows must burn, over the recorded 5xx ratios of the release's namespace."""
    (rule,) = of_kind(rendered["all_on"], "PrometheusRule")
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "camflow.slo"]
    records = {r["record"]: r["expr"] for r in group["rules"] if "record" in r}
    assert set(records) == {f"camflow:edge_5xx_ratio:rate{w}" for w in ("5m", "30m", "1h", "6h")}
    for window, expr in ((w, records[f"camflow:edge_5xx_ratio:rate{w}"]) for w in ("5m", "6h")):
        assert f'status=~"5.."}}[{window}]' in expr and 'namespace="' in expr, expr
    alerts = {r["alert"]: r for r in group["rules"] if "alert" in r}
    fast, slow = alerts["CamflowEdgeErrorBudgetBurnFast"], alerts["CamflowEdgeErrorBudgetBurnSlow"]
    budget = 1 - 0.999

    def thresholds(expr: str) -> list[float]:
        return [float(x) for x in re.findall(r"> ([0-9.e-]+)", expr)]

    assert "rate1h >" in fast["expr"] and "and camflow:edge_5xx_ratio:rate5m >" in fast["expr"]
    assert thresholds(fast["expr"]) == [pytest.approx(14.4 * budget)] * 2
    assert "rate6h >" in slow["expr"] and "and camflow:edge_5xx_ratio:rate30m >" in slow["expr"]
    assert thresholds(slow["expr"]) == [pytest.approx(6 * budget)] * 2
    assert fast["labels"]["severity"] == "critical" and slow["labels"]["severity"] == "warning"


def test_a_region_reaches_the_packager_and_edge_and_alerts_on_replication(
    rendered: dict[str, list[Any]], helm: str, tmp_path: Path
) -> None:
    """region.name and edgeUrl become CAMFLOW_REGION(_EDGE_URL) of the packager and the edge (their
    --region flags' environment), with an alert on a peer's heartbeat age; nothing without them."""
    for case, want in (("all_on", ("eu-west", "https://live.eu-west.example.com")), ("default", None)):
        for deployment, container in containers(rendered[case]):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            got = (env["CAMFLOW_REGION"], env["CAMFLOW_REGION_EDGE_URL"]) if "CAMFLOW_REGION" in env else None
            if deployment["metadata"]["name"].endswith(("-packager", "-edge")):
                assert got == want, (case, deployment["metadata"]["name"], env)
    (rule,) = of_kind(rendered["all_on"], "PrometheusRule")
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "camflow.regions"]
    (alert,) = group["rules"]
    assert alert["alert"] == "CamflowRegionReplicationBehind"
    assert "camflow_region_heartbeat_age_seconds" in alert["expr"] and alert["expr"].endswith("> 60")
    template = ["template", "cf", str(CHART), "--kube-version", K8S_VERSIONS[-1], "-f"]
    out = run_helm(helm, *template, str(values_file(tmp_path, {"region": {"name": "eu-west"}})))
    assert out.returncode != 0 and "region.edgeUrl" in out.stderr


def test_secret_and_existing_secret(helm: str, rendered: dict[str, list[Any]], tmp_path: Path) -> None:
    (secret,) = [
        s for s in of_kind(rendered["all_on"], "Secret") if not s["metadata"]["name"].endswith("-sources")
    ]
    assert set(secret["data"]) == {"token-secret", "s3-access-key", "s3-secret-key"}
    (default_secret,) = of_kind(rendered["default"], "Secret")
    assert len(default_secret["data"]["token-secret"]) >= 64  # generated, base64
    docs = render(helm, tmp_path, {"secret": {"existingSecret": "camflow-prod"}})
    assert not of_kind(docs, "Secret")
    for deployment, container in containers(docs):
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
        }
        assert set(refs.values()) <= {"camflow-prod"}  # the S3 keys, where the service uses the store
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["token-keys"]["secret"]["secretName"] == "camflow-prod"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CAMFLOW_SECRET_FILE"] == KEYS_FILE and "CAMFLOW_SECRET" not in env


KEYS_FILE = "/var/run/secrets/camflow/token-keys/keys"


def kubelet_secret_dir(directory: Path, files: dict[str, bytes], generation: int) -> None:
    """Lay out (or update) a Secret volume as the kubelet does: the files in a timestamped directory,
    ``..data`` a symlink to it, swapped atomically on an update, each file a symlink through it."""
    stamp = directory / f"..2026_12_03_{generation:02d}"
    stamp.mkdir(parents=True)
    for name, data in files.items():
        (stamp / name).write_bytes(data)
    (directory / "..data_tmp").symlink_to(stamp.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


def test_token_keys_are_a_mounted_file_that_rotates_without_a_restart(helm: str, tmp_path: Path) -> None:
    """Every service reads the token keys from the Secret mounted as a file (CAMFLOW_SECRET_FILE),
    never from an environment value, through a directory mount (a subPath is never updated by the
    kubelet); editing the Secret (rotate, then retire) reaches a running signer without a restart.
    A Secret written in CAMFLOW_SECRET's ``KID:SECRET,...`` form reads the same as a file."""
    from camflow.signing import KeysFile
    from camflow.tokens import Action, TokenKeyRetired, TokenSigner

    old, new = "o" * 32, "n" * 32
    docs = render(helm, tmp_path, {"secret": {"tokenSecret": f"k1:{old}"}})
    (secret,) = of_kind(docs, "Secret")
    seen = set()
    for deployment, container in containers(docs):
        seen.add(deployment["metadata"]["labels"]["app.kubernetes.io/component"])
        env = {e["name"]: e for e in container["env"]}
        assert env["CAMFLOW_SECRET_FILE"]["value"] == KEYS_FILE and "CAMFLOW_SECRET" not in env
        assert old not in yaml.safe_dump(container)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "token-keys"]
        assert mount == {"name": "token-keys", "mountPath": str(Path(KEYS_FILE).parent), "readOnly": True}
        (volume,) = [
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "token-keys"
        ]
        assert volume["secret"] == {
            "secretName": secret["metadata"]["name"],
            "defaultMode": 0o440,
            "items": [{"key": "token-secret", "path": "keys"}],
        }
    assert seen == {"ingest", "transcode", "packager", "edge"}

    mount_dir = tmp_path / "pod" / Path(KEYS_FILE).parent.relative_to("/")
    kubelet_secret_dir(mount_dir, {"keys": base64.b64decode(secret["data"]["token-secret"])}, 1)
    signer = TokenSigner(KeysFile(mount_dir / "keys", interval=0))  # what each service holds
    before = signer.issue("cam1", Action.VIEW, 600)
    assert before.startswith("v2.k1.")
    # The operator rotates and retires by editing the Secret; the kubelet swaps the mounted files.
    kubelet_secret_dir(mount_dir, {"keys": f"k2 {new}\nk1 {old}\n".encode()}, 2)
    assert signer.verify(before, "cam1", Action.VIEW) and signer.issue("cam1", Action.VIEW, 600).startswith(
        "v2.k2."
    )
    kubelet_secret_dir(mount_dir, {"keys": f"k2 {new}\nk1 retired\n".encode()}, 3)
    with pytest.raises(TokenKeyRetired):
        signer.verify(before, "cam1", Action.VIEW)


def test_no_secret_on_a_command_line_or_in_the_configmap(
    helm: str, rendered: dict[str, list[Any]], tmp_path: Path
) -> None:
    """Secrets reach the pods from Secrets (env, files), never from args or the ConfigMap, which
    more people and tools can read (a process's command line is visible to every user of its node)."""
    secrets = ["door-camera-pass", "secret-example", "AKIAEXAMPLE", "t" * 64]
    docs = rendered["all_on"]
    for _, container in containers(docs):
        args = " ".join(str(a) for a in container["args"])
        env_values = " ".join(str(e.get("value", "")) for e in container.get("env", []))
        assert not any(s in args or s in env_values for s in secrets), container["name"]
    (config,) = of_kind(docs, "ConfigMap")
    assert not any(s in json.dumps(config) for s in secrets)
    docs = render(helm, tmp_path, {"ingest": {"pullSourcesSecret": "camera-urls"}})
    (ingest,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ingest")]
    volumes = {v["name"]: v for v in ingest["spec"]["template"]["spec"]["volumes"]}
    assert volumes["sources"]["secret"]["secretName"] == "camera-urls"
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("-sources")]


def test_bad_values_are_refused(helm: str, tmp_path: Path) -> None:
    bad = {"transcode": {"keda": {"enabled": True}}}  # and the CPU HPA still on
    template = ["template", "cf", str(CHART), "--kube-version", K8S_VERSIONS[-1], "-f"]
    out = run_helm(helm, *template, str(values_file(tmp_path, bad)))
    assert out.returncode != 0 and "enable one" in out.stderr
    odd = {"ingest": {"rtsp": {"udp": {"firstPort": 20001}}}}
    out = run_helm(helm, *template, str(values_file(tmp_path, odd)))
    assert out.returncode != 0 and "must be even" in out.stderr
    none = {"kafka": {"replication": 0}}
    out = run_helm(helm, *template, str(values_file(tmp_path, none)))
    assert out.returncode != 0 and "kafka.replication 0: must be 1 or more" in out.stderr


def test_every_value_is_documented() -> None:
    """Each key of values.yaml has a comment right above it, or sits inside a commented key."""
    undocumented = []
    documented_at: list[int] = []  # indents of the commented keys we are inside
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if match:
            indent = len(match.group(1))
            documented_at = [i for i in documented_at if i < indent]
            if previous.lstrip().startswith("#"):
                documented_at.append(indent)
            elif not documented_at and not line.rstrip().endswith(":"):
                undocumented.append(match.group(2))
        if line.strip():
            previous = line
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


# --- Kafka client security and the S3 CA bundle ----------------------------------------------------

SECRETS_DIR = "/var/run/secrets/camflow"


def backend_tls_values(certs: Path) -> dict[str, Any]:
    """SASL_SSL with mutual TLS and an S3 CA bundle, the files inline (the chart makes the Secrets)."""
    return {
        "kafka": {
            "security": {
                "protocol": "SASL_SSL",
                "username": "camflow",
                "ca": (certs / "ca.crt").read_text(),
                "cert": (certs / "client.crt").read_text(),
                "key": (certs / "client.key").read_text(),
                "password": "scram-password-in-values",
            }
        },
        "s3": {"endpoint": "https://minio.example:9000", "tls": {"ca": (certs / "ca.crt").read_text()}},
    }


def mounted_files(container: dict[str, Any], pod: dict[str, Any], docs: list[Any], into: Path) -> Path:
    """Write the files the container's Secret volumes would hold under ``into`` (same layout)."""
    secrets = {d["metadata"]["name"]: d for d in of_kind(docs, "Secret")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        assert mount["readOnly"] and source["defaultMode"] == 0o440
        data = secrets[source["secretName"]]["data"]
        for item in source["items"]:
            path = into / mount["mountPath"].lstrip("/") / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(data[item["key"]]))
    return into


def test_kafka_and_s3_tls_values_mount_files_that_camflow_loads(helm: str, tmp_path: Path) -> None:
    from camflow.bus.security import KafkaSecurity
    from camflow.store.s3 import S3Location, tls_context
    from tests.tls_backends import make_certificates

    certs = make_certificates(tmp_path / "certs", "client")
    docs = render(helm, tmp_path, backend_tls_values(certs))
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    names = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    assert {"cf-camflow-kafka-client", "cf-camflow-s3-ca"} <= names
    seen = set()
    for deployment, container in containers(docs):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        seen.add(component)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "scram-password-in-values" not in yaml.safe_dump(container)  # a file, never an env value
        assert env["CAMFLOW_KAFKA_PASSWORD_FILE"] == f"{SECRETS_DIR}/kafka/password"
        root = mounted_files(container, deployment["spec"]["template"]["spec"], docs, tmp_path / component)
        local = {k: v.replace(SECRETS_DIR, f"{root}{SECRETS_DIR}") for k, v in env.items() if v}
        security = KafkaSecurity.from_env(local)  # what the service itself does at start
        assert security.password == "scram-password-in-values"
        assert security.cert_file is not None and security.check_hostname
        if component == "ingest":
            assert "CAMFLOW_S3_CA_FILE" not in env  # ingest has no store
        else:
            context = tls_context(S3Location.parse("https://minio.example:9000/camflow"), local)
            assert context is not None and len(context.get_ca_certs()) == 1
    assert seen == {"ingest", "transcode", "packager", "edge"}


def test_kafka_security_from_an_existing_secret(helm: str, tmp_path: Path) -> None:
    values = {
        "kafka": {
            "security": {
                "protocol": "SASL_SSL",
                "username": "svc",
                "saslMechanism": "SCRAM-SHA-256",
                "existingSecret": "kafka-client",
            }
        },
        "s3": {"endpoint": "https://s3.example", "tls": {"existingSecret": "corp-ca", "caKey": "bundle.pem"}},
    }
    docs = render(helm, tmp_path, values)
    assert {d["metadata"]["name"] for d in of_kind(docs, "Secret")} == {"cf-camflow"}  # only the token one
    for deployment, container in containers(docs):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        kafka = volumes["kafka-client"]["secret"]
        assert kafka["secretName"] == "kafka-client"
        assert kafka["items"] == [
            {"key": "ca.crt", "path": "ca.crt"},
            {"key": "password", "path": "password"},
        ]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CAMFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256" and "CAMFLOW_KAFKA_CERT_FILE" not in env
        if "s3-ca" in volumes:
            assert volumes["s3-ca"]["secret"]["secretName"] == "corp-ca"
            assert volumes["s3-ca"]["secret"]["items"] == [{"key": "bundle.pem", "path": "ca.crt"}]


def test_plaintext_default_mounts_nothing(rendered: dict[str, list[Any]]) -> None:
    for deployment, container in containers(rendered["default"]):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CAMFLOW_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
        assert not [name for name in env if name.startswith("CAMFLOW_KAFKA_") and name.endswith("_FILE")]
        assert "CAMFLOW_S3_CA_FILE" not in env
        volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert not volumes & {"kafka-client", "s3-ca"}


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"kafka": {"security": {"protocol": "TLS"}}}, 'kafka.security.protocol "TLS": expected PLAINTEXT'),
        ({"kafka": {"security": {"protocol": "SASL_SSL", "password": "x"}}}, "needs kafka.security.username"),
        ({"kafka": {"security": {"protocol": "SASL_SSL", "username": "u"}}}, "needs the password"),
        ({"kafka": {"security": {"protocol": "SSL", "cert": "PEM"}}}, "needs both the client certificate"),
        ({"s3": {"tls": {"ca": "PEM"}}}, "s3.tls: a CA bundle is set but s3.endpoint"),
    ],
)
def test_bad_backend_tls_values_are_refused(
    helm: str, tmp_path: Path, values: dict[str, Any], said: str
) -> None:
    template = ["template", "cf", str(CHART), "--kube-version", K8S_VERSIONS[-1], "-f"]
    out = run_helm(helm, *template, str(values_file(tmp_path, values)))
    assert out.returncode != 0 and said in out.stderr, out.stderr


def test_low_latency_is_on_by_default_and_one_value_turns_it_off(
    helm: str, tmp_path: Path, rendered: dict[str, list[Any]]
) -> None:
    """`config.lowLatency` (docs/low-latency.md): ingest and the packager get `--part-duration`,
    nobody `--no-low-latency`; false gives ingest, transcode and the packager `--no-low-latency`."""

    def args(docs: list[Any]) -> dict[str, list[str]]:
        return {c["name"]: [str(a) for a in c.get("args", [])] for _, c in containers(docs)}

    on = args(rendered["default"])
    for name in ("ingest", "packager"):
        assert on[name][on[name].index("--part-duration") + 1] == "0.2", on[name]
    assert not any("--no-low-latency" in a for a in on.values()), on
    off = args(render(helm, tmp_path, {"config": {"lowLatency": False, "partDuration": 0.5}}))
    for name in ("ingest", "transcode", "packager"):
        assert "--no-low-latency" in off[name] and "--part-duration" not in off[name], off[name]
    assert "--no-low-latency" not in off["edge"]  # the edge follows what the playlists say
