"""Offline checks of the deployment files that no off-the-shelf validator covers.

Run by scripts/validate-deploy inside its own virtualenv (PyYAML, jsonschema and
kubernetes-validate come from there). Subcommands:

  metrics               dashboards and alert rules query only metrics, labels and label
                        values listed in deploy/metrics.txt (or metrics-external.txt); also
                        writes every dashboard query into a rules file for `promtool` to parse
  dashboards            Grafana dashboard JSON structure and provisioning
  compose FILE          GROK2API_* variables name real configuration keys
  k8s NAME FILE         a rendered kustomize overlay: schemas (built-in kinds with the bundled
                        Kubernetes schemas, CRDs with deploy/validate/schemas) and the
                        project's invariants (probes, drain, security, references)
  otel                  the collector's pipelines use only components it defines
  prometheusrule [--write]
                        k8s/base/prometheusrule.yaml carries exactly deploy/prometheus/alerts.yml

Each prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "1.30.0")

# Labels Prometheus or the Operator attach to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def finish(what: str, checked: int) -> None:
    for line in problems:
        print(f"  FAIL {line}")
    if problems:
        print(f"{what}: {len(problems)} problem(s)")
        sys.exit(1)
    print(f"{what}: ok ({checked} checked)")


# --- the metric catalogue ---------------------------------------------------------------------


class Metric:
    def __init__(self, name: str, kind: str, labels: dict[str, set[str] | None]):
        self.name, self.kind, self.labels = name, kind, labels


def load_catalogue() -> dict[str, Metric]:
    """Series name -> metric, histograms expanded to _bucket/_sum/_count."""
    series: dict[str, Metric] = {}
    for file in ("metrics.txt", "metrics-external.txt"):
        for number, raw in enumerate((DEPLOY / file).read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, kind, *label_specs = line.split()
            if kind not in {"counter", "gauge", "histogram"}:
                problem(f"deploy/{file}:{number}", f"unknown type {kind!r}")
                continue
            labels: dict[str, set[str] | None] = {}
            for spec in label_specs:
                label, _, values = spec.partition("=")
                labels[label] = set(values.split("|")) if values else None
            if kind == "histogram":
                series[name + "_bucket"] = Metric(name, kind, {**labels, "le": None})
                series[name + "_sum"] = Metric(name, kind, labels)
                series[name + "_count"] = Metric(name, kind, labels)
            else:
                series[name] = Metric(name, kind, labels)
    return series


# --- a small PromQL reader ----------------------------------------------------------------------

KEYWORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "histogram_count", "histogram_sum", "histogram_fraction",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace",
    "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round",
    "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "inf", "nan",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*,?')
IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")
RANGE = re.compile(r"\[[^\]]*\]")
GRAFANA_VARIABLE = re.compile(r"\$\{[^}]+\}|\$__\w+|\$\w+|\[\[\w+\]\]")


def grafana_to_promql(expr: str) -> str:
    """Grafana variables replaced by values that keep the query valid PromQL."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{__(rate_interval|interval|range)\}", "5m", expr)
    return GRAFANA_VARIABLE.sub(".*", expr)


def check_expr(where: str, expr: str, catalogue: dict[str, Metric]) -> None:
    metrics_used: list[Metric] = []
    # Selectors with matchers: metric{label op "value", ...}
    for name, body in SELECTOR.findall(expr):
        metric = catalogue.get(name) if name else None
        if name and name not in KEYWORDS and metric is None:
            continue  # reported below with the bare identifiers
        position, matchers = 0, []
        while position < len(body.strip()):
            found = MATCHER.match(body, position)
            if not found:
                problem(where, f"cannot read label matchers {{{body}}}")
                break
            matchers.append(found.groups())
            position = found.end()
        if metric is None:
            continue
        for label, op, quoted in matchers:
            if label in TARGET_LABELS:
                continue
            if label not in metric.labels:
                problem(where, f"{name} has no label {label!r}")
                continue
            allowed = metric.labels[label]
            value = quoted[1:-1]
            if allowed is None or ".*" in value:
                continue
            words = value.split("|") if op in ("=~", "!~") else [value]
            if op in ("=~", "!~") and any(re.search(r"[\\^$.*+?()\[\]{}]", w) for w in words):
                continue  # a real regular expression: nothing literal to compare
            for word in words:
                if word not in allowed:
                    problem(where, f"{name}{{{label}}} never takes the value {word!r}")
    # Bare identifiers outside strings, ranges and grouping clauses are metric names.
    stripped = RANGE.sub("", GROUPING.sub(" ", STRING.sub('""', expr)))
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    for name in IDENT.findall(stripped):
        if name in KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        metric = catalogue.get(name)
        if metric is None:
            problem(where, f"queries {name!r}, which no exporter provides (deploy/metrics.txt)")
        else:
            metrics_used.append(metric)
    # Grouping labels must exist on some metric of the expression.
    known = set(TARGET_LABELS) | {"le"}
    for metric in metrics_used:
        known |= set(metric.labels)
    for _, labels in GROUPING.findall(STRING.sub('""', expr)):
        for label in filter(None, (part.strip() for part in labels.split(","))):
            if label not in known:
                problem(where, f"groups by {label!r}, a label none of its metrics has")


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def walk_panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_queries(dashboard: dict):
    """(where, expr) for every query of a dashboard: panel targets and variable queries."""
    for panel in walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") != "query" or not query:
            continue
        found = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query)
        if found:
            yield f"variable {variable.get('name')}", found.group(1)
        else:
            found = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
            yield f"variable {variable.get('name')}", found.group(1) if found else query


def cmd_metrics(rules_out: str) -> None:
    catalogue = load_catalogue()
    checked = 0
    recording_rules = []
    for file in dashboard_files():
        dashboard = json.loads(file.read_text())
        for index, (where, expr) in enumerate(dashboard_queries(dashboard)):
            promql = grafana_to_promql(expr)
            check_expr(f"{file.relative_to(ROOT)} {where}", promql, catalogue)
            recording_rules.append(
                {"record": f"dashboard:{file.stem.replace('-', '_')}:q{index}", "expr": promql}
            )
            checked += 1
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            check_expr(f"{ALERTS.relative_to(ROOT)} {rule.get('alert') or rule.get('record')}",
                       rule["expr"], catalogue)
            checked += 1
    Path(rules_out).write_text(yaml.safe_dump(
        {"groups": [{"name": "dashboard-queries", "rules": recording_rules}]}, sort_keys=False))
    finish("metrics used by dashboards and alerts", checked)


# --- dashboards ---------------------------------------------------------------------------------


def cmd_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    datasource_uids = {d["uid"] for d in datasources["datasources"]}
    providers = yaml.safe_load((provisioning / "dashboards" / "grok2api.yml").read_text())
    paths = [p["options"]["path"] for p in providers["providers"]]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    for path in paths:
        if f"./deploy/grafana/dashboards:{path}:ro" not in mounts:
            problem("grafana provisioning", f"dashboards path {path} is not where compose mounts them")
    uids: dict[str, Path] = {}
    files = dashboard_files()
    if len(files) < 4:
        problem("deploy/grafana/dashboards", f"expected 4 dashboards, found {len(files)}")
    for file in files:
        where = str(file.relative_to(ROOT))
        try:
            dashboard = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            problem(where, f"not valid JSON: {error}")
            continue
        for key in ("uid", "title", "schemaVersion", "panels"):
            if key not in dashboard:
                problem(where, f"has no {key!r}")
        uid = dashboard.get("uid", "")
        if uid in uids:
            problem(where, f"uid {uid!r} also used by {uids[uid].name}")
        uids[uid] = file
        if dashboard.get("id") is not None:
            problem(where, "a provisioned dashboard must have \"id\": null")
        variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
        ids = set()
        graphs = 0
        for panel in walk_panels(dashboard.get("panels", [])):
            title = f"{where} panel {panel.get('id')} {panel.get('title')!r}"
            if panel.get("id") in ids:
                problem(title, "duplicate panel id")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            graphs += 1
            grid = panel.get("gridPos", {})
            if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
                problem(title, "needs gridPos with integer x, y, w, h")
            elif grid["x"] + grid["w"] > 24:
                problem(title, "is wider than the 24-column grid")
            if not panel.get("title"):
                problem(title, "has no title")
            source = panel.get("datasource", {}).get("uid")
            if source not in datasource_uids and source.lstrip("${").rstrip("}") not in variables:
                problem(title, f"datasource uid {source!r} is not provisioned")
            targets = panel.get("targets", [])
            if not targets or not all(t.get("expr") for t in targets):
                problem(title, "needs at least one target, each with a PromQL expr")
            ref_ids = [t.get("refId") for t in targets]
            if len(set(ref_ids)) != len(ref_ids):
                problem(title, "duplicate refId")
            for found in re.findall(r"\$\{?(\w+)", json.dumps(targets)):
                if not found.startswith("__") and found not in variables:
                    problem(title, f"uses ${found}, which the dashboard does not define")
        if graphs == 0:
            problem(where, "has no panel")
    for file in files:
        dashboard = json.loads(file.read_text())
        for link in dashboard.get("links", []):
            url = link.get("url", "")
            found = re.match(r"/d/([\w-]+)", url)
            if found and found.group(1) not in uids:
                problem(str(file.relative_to(ROOT)), f"links to unknown dashboard {found.group(1)}")
    finish("grafana dashboards", len(files))


# --- configuration keys ---------------------------------------------------------------------------


def config_keys() -> set[str]:
    defaults = tomllib.loads((ROOT / "shared" / "config" / "defaults.toml").read_text())
    return {f"{section}.{key}" for section, table in defaults.items() for key in table}


def check_env_name(where: str, name: str, keys: set[str]) -> None:
    if not name.startswith("GROK2API_") or name == "GROK2API_CONFIG":
        return
    section, _, key = name[len("GROK2API_"):].lower().partition("__")
    if f"{section}.{key}" not in keys:
        problem(where, f"{name} names no configuration key ({section}.{key} is not in defaults.toml)")


def cmd_compose(path: str) -> None:
    keys = config_keys()
    compose = yaml.safe_load(Path(path).read_text())
    checked = 0
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for variable in environment:
            check_env_name(f"{path} service {name}", variable, keys)
            checked += 1
        for file in re.findall(r"\./(deploy/[^:]+):", json.dumps(service.get("volumes", []))):
            if not (ROOT / file).exists():
                problem(f"{path} service {name}", f"mounts {file}, which does not exist")
    finish("compose configuration keys", checked)


# --- OpenTelemetry collector ----------------------------------------------------------------------


def cmd_otel() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    service = config.get("service", {})
    for extension in service.get("extensions", []):
        if extension not in config.get("extensions", {}):
            problem("deploy/otel-collector.yaml", f"extension {extension} is not defined")
    pipelines = service.get("pipelines", {})
    if "traces" not in pipelines:
        problem("deploy/otel-collector.yaml", "has no traces pipeline")
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                if component not in (config.get(section) or {}):
                    problem(f"deploy/otel-collector.yaml pipeline {name}",
                            f"{section[:-1]} {component} is not defined")
        for section in ("receivers", "exporters"):
            if not pipeline.get(section):
                problem(f"deploy/otel-collector.yaml pipeline {name}", f"has no {section}")
    finish("otel collector config", len(pipelines))


# --- PrometheusRule ---------------------------------------------------------------------------------

PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `scripts/validate-deploy --write`; edit that
# file, not this one (validation fails while they differ). For the Prometheus Operator; the
# `release` label may need to match your Prometheus' ruleSelector.
"""


def prometheus_rule() -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "grok2api", "labels": {"app.kubernetes.io/name": "grok2api"}},
        "spec": {"groups": yaml.safe_load(ALERTS.read_text())["groups"]},
    }


def cmd_prometheusrule(write: bool) -> None:
    wanted = prometheus_rule()
    if write:
        PROMETHEUS_RULE.write_text(PROMETHEUS_RULE_HEADER + yaml.safe_dump(
            wanted, sort_keys=False, width=100, allow_unicode=True))
    elif not PROMETHEUS_RULE.exists() or yaml.safe_load(PROMETHEUS_RULE.read_text()) != wanted:
        problem(str(PROMETHEUS_RULE.relative_to(ROOT)),
                "differs from deploy/prometheus/alerts.yml; run scripts/validate-deploy --write")
    finish("PrometheusRule matches alerts.yml", 1)


# --- Kubernetes -------------------------------------------------------------------------------------

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
DRAIN_SECONDS = 25
# The long-running roles, which serve /healthz and /readyz and drain on SIGTERM.
ROLES = ("gateway", "worker", "scheduler")


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", selector if "matchExpressions" not in selector
                                   and "matchLabels" not in selector else {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression.get("values", []):
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def check_workload(where: str, obj: dict, keys: set[str], configmaps: dict, secrets: dict) -> None:
    spec = pod_spec(obj)
    security = spec.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot must be true")
    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "should not mount a service account token (automountServiceAccountToken: false)")
    for container in spec["containers"]:
        at = f"{where} container {container['name']}"
        context = container.get("securityContext", {})
        if context.get("readOnlyRootFilesystem") is not True:
            problem(at, "readOnlyRootFilesystem must be true")
        if context.get("allowPrivilegeEscalation") is not False:
            problem(at, "allowPrivilegeEscalation must be false")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problem(at, "must drop ALL capabilities")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    problem(at, f"needs resources.{kind}.{resource}")
        image = container.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problem(at, f"image {image!r} needs a fixed tag")
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        if "/data" not in mounts:
            problem(at, "needs a writable volume at /data (the root filesystem is read-only)")
        for source in container.get("envFrom", []):
            if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                problem(at, f"envFrom ConfigMap {source['configMapRef']['name']} is not in the overlay")
            if "secretRef" in source and source["secretRef"]["name"] not in secrets \
                    and source["secretRef"]["name"] != "grok2api-secrets":
                problem(at, f"envFrom Secret {source['secretRef']['name']} is unknown")
        for variable in container.get("env", []):
            check_env_name(at, variable["name"], keys)
        if obj["kind"] != "Deployment" or container.get("args", [""])[0] not in ROLES:
            continue
        ports = {p.get("name") for p in container.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet")
            if not get or get.get("path") != path:
                problem(at, f"{probe} must GET {path}")
            elif get.get("port") not in ports:
                problem(at, f"{probe} port {get.get('port')!r} is not a container port")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace < pre_stop + DRAIN_SECONDS:
            problem(at, f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} s + drain {DRAIN_SECONDS} s")
        if "gateway" in container.get("args", []) and pre_stop < 3:
            problem(at, "a gateway needs a preStop sleep so endpoints drop it before it drains")


def cmd_k8s(name: str, path: str) -> None:
    import jsonschema
    import kubernetes_validate

    documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    keys = config_keys()
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in documents:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    for obj in documents:
        where = f"{name} {obj['kind']}/{obj['metadata']['name']}"
        schema_file = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema_file:
            schema = json.loads((SCHEMAS / schema_file).read_text())
            for error in jsonschema.Draft202012Validator(schema).iter_errors(obj):
                path_text = "/".join(str(p) for p in error.absolute_path)
                problem(where, f"{path_text}: {error.message}")
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                path_text = "/".join(str(p) for p in error.absolute_path)
                problem(where, f"{path_text}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problem(where, error.message)
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    workloads = [o for o in documents if pod_spec(o) is not None]
    for obj in workloads:
        check_workload(f"{name} {obj['kind']}/{obj['metadata']['name']}", obj, keys, configmaps, secrets)
    for configmap in configmaps.values():
        for variable in configmap.get("data", {}):
            check_env_name(f"{name} ConfigMap/{configmap['metadata']['name']}", variable, keys)
    for secret in secrets.values():
        for variable in {**secret.get("data", {}), **secret.get("stringData", {})}:
            check_env_name(f"{name} Secret/{secret['metadata']['name']}", variable, keys)
    deployments = by_kind.get("Deployment", {})
    for role in ROLES:
        if f"grok2api-{role}" not in deployments:
            problem(name, f"has no Deployment grok2api-{role}")
    if "grok2api-migrate" not in by_kind.get("Job", {}):
        problem(name, "has no migration Job")
    services = by_kind.get("Service", {})
    for service in services.values():
        where = f"{name} Service/{service['metadata']['name']}"
        matched = [o for o in workloads if selects(service["spec"].get("selector", {}), pod_labels(o))]
        if not matched:
            problem(where, "selects no pod")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and not any(
                    target in {p.get("name") for c in pod_spec(o)["containers"] for p in c.get("ports", [])}
                    for o in matched):
                problem(where, f"targetPort {target!r} is no port of the pods it selects")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for obj in by_kind.get(kind, {}).values():
            target = obj["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                problem(f"{name} {kind}/{obj['metadata']['name']}", f"scales {target}, which does not exist")
    scaled_targets = [o["spec"]["scaleTargetRef"]["name"] for k in ("HorizontalPodAutoscaler", "ScaledObject")
                      for o in by_kind.get(k, {}).values()]
    for target in set(scaled_targets):
        if scaled_targets.count(target) > 1:
            problem(name, f"{target} has more than one autoscaler")
    prefix = "grok2api"
    for configmap in configmaps.values():
        prefix = configmap.get("data", {}).get("GROK2API_BACKEND__PREFIX", prefix)
    for obj in by_kind.get("ScaledObject", {}).values():
        for trigger in obj["spec"]["triggers"]:
            queue = trigger.get("metadata", {}).get("queueName", "")
            if trigger["type"] == "rabbitmq" and not re.fullmatch(
                    re.escape(prefix) + r"\.jobs\.(chat|image|video|maintenance)", queue):
                problem(f"{name} ScaledObject/{obj['metadata']['name']}",
                        f"queue {queue!r} is not one of {prefix}.jobs.<kind>")
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                problem(f"{name} ScaledObject/{obj['metadata']['name']}", f"authenticationRef {auth} is missing")
    for obj in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(selects(obj["spec"]["selector"], pod_labels(o)) for o in workloads):
            problem(f"{name} PodDisruptionBudget/{obj['metadata']['name']}", "selects no pod")
    for obj in by_kind.get("NetworkPolicy", {}).values():
        if not any(selects(obj["spec"]["podSelector"], pod_labels(o)) for o in workloads):
            problem(f"{name} NetworkPolicy/{obj['metadata']['name']}", "selects no pod")
    for obj in by_kind.get("ServiceMonitor", {}).values():
        where = f"{name} ServiceMonitor/{obj['metadata']['name']}"
        selected = [s for s in services.values() if selects(obj["spec"]["selector"], s["metadata"].get("labels", {}))]
        jobs = {s["metadata"]["name"] for s in selected}
        for role in ("gateway", "worker", "scheduler"):
            if f"grok2api-{role}" not in jobs:
                problem(where, f"does not scrape grok2api-{role} (alerts select job=\"grok2api-{role}\")")
        port_names = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        for endpoint in obj["spec"]["endpoints"]:
            if endpoint.get("port") not in port_names:
                problem(where, f"endpoint port {endpoint.get('port')!r} is on no selected Service")
    ingresses = by_kind.get("Ingress", {})
    if not ingresses:
        problem(name, "has no Ingress")
    for obj in ingresses.values():
        where = f"{name} Ingress/{obj['metadata']['name']}"
        annotations = obj["metadata"].get("annotations", {})
        if annotations.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            problem(where, "SSE needs nginx.ingress.kubernetes.io/proxy-buffering: \"off\"")
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            if int(annotations.get(f"nginx.ingress.kubernetes.io/{timeout}", "0")) < 3600:
                problem(where, f"long streams need {timeout} >= 3600")
        for rule in obj["spec"].get("rules", []):
            for http_path in rule.get("http", {}).get("paths", []):
                backend = http_path["backend"]["service"]
                service = services.get(backend["name"])
                if not service:
                    problem(where, f"backend Service {backend['name']} does not exist")
                elif backend["port"].get("name") not in {p.get("name") for p in service["spec"]["ports"]} \
                        and backend["port"].get("number") not in {p["port"] for p in service["spec"]["ports"]}:
                    problem(where, f"backend port {backend['port']} is not on Service {backend['name']}")
    finish(f"kubernetes overlay {name}", len(documents))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    command, *args = argv
    if command == "metrics":
        cmd_metrics(args[0])
    elif command == "dashboards":
        cmd_dashboards()
    elif command == "compose":
        cmd_compose(args[0])
    elif command == "otel":
        cmd_otel()
    elif command == "prometheusrule":
        cmd_prometheusrule("--write" in args)
    elif command == "k8s":
        cmd_k8s(args[0], args[1])
    else:
        sys.exit(f"unknown command {command}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
