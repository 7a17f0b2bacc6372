#!/usr/bin/env python3
"""Evaluates every PromQL query of a Grafana dashboard against a live Prometheus.

Collects the queries of every panel (rows included), of every query template
variable and of every annotation, substitutes the template variables, and
asks Prometheus's HTTP API. A panel query must return at least one series at
the current time; an annotation query must return one over the last
--range_seconds (annotations mark events, which are in the past); the run
variable's query must offer --run. With --one_series_per_run, a query about
the run must return exactly one series (several replicas are scraped: the
run's panels must not split by instance).

Usage: prometheus_dashboard.py --prometheus URL --dashboard FILE --run NAME
                               [--var name=value ...] [--range_seconds N]
                               [--one_series_per_run]
Exit status 1 with one line per failing query.
"""
import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request


def api(base, path, params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def substitute(expr, variables):
    # $name, ${name} and ${name:fmt}; longest names first.
    for name in sorted(variables, key=len, reverse=True):
        expr = re.sub(r"\$\{%s(:[a-z]+)?\}|\$%s\b" % (re.escape(name), re.escape(name)),
                      lambda _: variables[name], expr)
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise ValueError(f"unsubstituted variables {left} in {expr}")
    return expr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--var", action="append", default=[])
    ap.add_argument("--range_seconds", type=int, default=600)
    ap.add_argument("--one_series_per_run", action="store_true")
    # Annotations for events the workload cannot make (a rollback needs a
    # diverging natural-gradient switch): their query must still evaluate
    # without error, but may find no event.
    ap.add_argument("--no_events_expected", action="append", default=[])
    a = ap.parse_args()
    dash = json.load(open(a.dashboard))
    variables = {"run": a.run, "__rate_interval": "15s", "__interval": "5s",
                 "__range": f"{a.range_seconds}s"}
    variables.update(v.split("=", 1) for v in a.var)
    failures = []
    checked = 0

    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
        if not m:
            failures.append(f"variable {v['name']}: unsupported query {q}")
            continue
        series, label = substitute(m.group(1), variables), m.group(2)
        values = api(a.prometheus, f"/api/v1/label/{label}/values", {"match[]": series})
        want = variables.get(v["name"])
        ok = bool(values) and (v["name"] != "run" or a.run in values)
        print(f"{'ok  ' if ok else 'FAIL'} variable ${v['name']}: {values}")
        checked += 1
        if not ok:
            failures.append(f"variable {v['name']} ({q}) offers {values}, want {want}")

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            expr = substitute(t["expr"], variables)
            result = api(a.prometheus, "/api/v1/query", {"query": expr})["result"]
            ok = len(result) > 0
            if a.one_series_per_run and "$run" in t["expr"]:
                ok = len(result) == 1
            print(f"{'ok  ' if ok else 'FAIL'} panel '{p['title']}' {t['refId']}: "
                  f"{len(result)} series  {expr}")
            checked += 1
            if not ok:
                failures.append(f"panel '{p['title']}' query {t['refId']} returned "
                                f"{len(result)} series: {expr}")

    now = time.time()
    for an in dash.get("annotations", {}).get("list", []):
        target = an.get("target") or {}
        if "expr" not in target:
            continue  # Grafana's built-in annotations
        expr = substitute(target["expr"], variables)
        result = api(a.prometheus, "/api/v1/query_range",
                     {"query": expr, "start": now - a.range_seconds, "end": now, "step": "1s"})["result"]
        points = sum(len(s["values"]) for s in result)
        ok = points > 0 or an["name"] in a.no_events_expected
        print(f"{'ok  ' if ok else 'FAIL'} annotation '{an['name']}': {points} events  {expr}")
        checked += 1
        if not ok:
            failures.append(f"annotation '{an['name']}' found no event: {expr}")

    if checked == 0:
        failures.append("the dashboard has no queries")
    for f in failures:
        print("FAIL:", f)
    print(f"{checked - len(failures)} of {checked} dashboard queries returned data")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
