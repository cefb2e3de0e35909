"""Operator metrics: ``GET /metrics`` in the Prometheus text format.

Two kinds of figures:

* **Facts of a process** (polls waiting in it, its database pool): ``prometheus_client``
  metrics defined here. Under ``moorage up`` every
  process it starts shares one multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``), so a
  scrape answered by any worker sums them all (gauges: ``livesum`` of live processes).
* **Facts of the database** (regions, their applied revision and lag, agents connected,
  deployment durations, exchanged credentials' tokens and their refresh failures, which the
  token refresher records on each token): read from the database at each scrape by
  :class:`DatabaseCollector`, so they agree whichever process answers and survive restarts.

Access (``docs`` in the README): with ``MOORAGE_METRICS_TOKEN`` set, only requests bearing it;
without, only loopback clients not behind a proxy. Anyone else gets the API's error shape.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Deployment durations (request → running or failed), seconds.
DEPLOY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

#: The process metrics; a registry of their own, so a scrape never mixes in the default one.
PROCESS = CollectorRegistry(auto_describe=True)

POLLS_WAITING = Gauge(
    "moorage_agent_polls_waiting", "Agents' long polls waiting for a change.",
    multiprocess_mode="livesum", registry=PROCESS)
DB_POOL_CONNECTIONS = Gauge(
    "moorage_db_pool_connections", "PostgreSQL pool connections by state (in_use, idle).",
    ["state"], multiprocess_mode="livesum", registry=PROCESS)
DB_POOL_MAX = Gauge(
    "moorage_db_pool_max_connections", "The most connections the pools may open.",
    multiprocess_mode="livesum", registry=PROCESS)
DB_POOL_WAITING = Gauge(
    "moorage_db_pool_requests_waiting", "Requests waiting for a pool connection.",
    multiprocess_mode="livesum", registry=PROCESS)
def refresh_pool_gauges(**_: object) -> None:
    """Copy this process's pool statistics into its gauges (at the end of each request)."""
    from django.db import connections

    pool = getattr(connections["default"], "pool", None)
    if pool is None:
        return
    stats = pool.get_stats()
    size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
    DB_POOL_CONNECTIONS.labels(state="in_use").set(max(0, size - available))
    DB_POOL_CONNECTIONS.labels(state="idle").set(available)
    DB_POOL_MAX.set(stats.get("pool_max", 0))
    DB_POOL_WAITING.set(stats.get("requests_waiting", 0))


class DatabaseCollector(Collector):
    """Regions, agents and deployments as the database knows them, read at each scrape."""

    def collect(self) -> Iterator[Metric]:
        from django.db.models import (
            Case,
            CharField,
            Count,
            DurationField,
            ExpressionWrapper,
            F,
            Q,
            Sum,
            Value,
            When,
        )

        from moorage.credentials.refresh import login_refresh_health
        from moorage.deployments.choices import DeploymentStatus
        from moorage.deployments.models import Deployment
        from moorage.regions import changelog, selectors
        from moorage.regions.choices import RegionStatus

        revision, _ = changelog.current_revision()
        yield GaugeMetricFamily("moorage_sync_revision", "The change log's latest revision.",
                                value=revision)
        states = selectors.region_states()
        yield GaugeMetricFamily(
            "moorage_agents_connected", "Regions whose agent was seen in the last 90 seconds.",
            value=sum(1 for s in states if s.status == RegionStatus.ONLINE))
        applied = GaugeMetricFamily("moorage_region_applied_revision",
                                    "The revision each region's agent applied.", labels=["region"])
        lag = GaugeMetricFamily("moorage_region_lag_revisions",
                                "Revisions each region is behind.", labels=["region"])
        lag_seconds = GaugeMetricFamily(
            "moorage_region_lag_seconds",
            "Age of the oldest change each region has not applied.", labels=["region"])
        for state in states:
            slug = state.region.slug
            applied.add_metric([slug], state.region.applied_revision)
            lag.add_metric([slug], state.lag_revisions)
            lag_seconds.add_metric([slug], state.lag_seconds)
        yield applied
        yield lag
        yield lag_seconds

        duration = ExpressionWrapper(F("finished_at") - F("created_at"),
                                     output_field=DurationField())
        buckets = {f"le_{i}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound)))
                   for i, bound in enumerate(DEPLOY_BUCKETS)}
        # A replaced deployment came up (its outcome was running); a superseded one never
        # ran, so it has no deploy duration.
        outcome = Case(When(status=DeploymentStatus.REPLACED,
                            then=Value(DeploymentStatus.RUNNING.value)),
                       default=F("status"), output_field=CharField())
        rows = (Deployment.objects.filter(finished_at__isnull=False)
                .exclude(status=DeploymentStatus.SUPERSEDED)
                .annotate(duration=duration, outcome=outcome).values("outcome")
                .annotate(count=Count("id"), total=Sum("duration"), **buckets)
                .order_by("outcome"))
        histogram = HistogramMetricFamily(
            "moorage_deployment_duration_seconds",
            "Finished deployments: seconds from the request to the outcome, by outcome.",
            labels=["outcome"])
        for row in rows:
            values: dict[str, Any] = dict(row)
            counts = [(str(bound), values[f"le_{i}"]) for i, bound in enumerate(DEPLOY_BUCKETS)]
            total = values["total"]
            histogram.add_metric(
                [values["outcome"]], [*counts, ("+Inf", values["count"])],
                sum_value=total.total_seconds() if total is not None else 0.0)
        yield histogram

        health = login_refresh_health()
        yield CounterMetricFamily(
            "moorage_credential_refresh_failures",
            "Failed refreshes of exchanged registry tokens (aws_ecr, gcp_service_account).",
            value=health["failures_total"])
        yield GaugeMetricFamily("moorage_credential_tokens",
                                "Exchanged registry tokens held.", value=health["tokens"])
        yield GaugeMetricFamily("moorage_credential_tokens_failing",
                                "Exchanged tokens whose refresh is failing now.",
                                value=health["failing"])


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(_Process())
    registry.register(DatabaseCollector())
    return registry


class _Process(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from PROCESS.collect()


def _allowed(request: HttpRequest) -> HttpResponse | None:
    """``None`` when the request may read the metrics, else the error answer."""
    token = settings.MOORAGE_METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode()):
            return None
        response = JsonResponse({"code": "metrics_token_invalid", "message":
                                 "Send the metrics token: 'Authorization: Bearer …' "
                                 "(MOORAGE_METRICS_TOKEN).", "detail": {}}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="moorage-metrics"'
        return response
    try:
        loopback = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        loopback = False
    proxied = "x-forwarded-for" in request.headers or "forwarded" in request.headers
    if loopback and not proxied:
        return None
    return JsonResponse({"code": "metrics_forbidden", "message":
                         "Metrics are served to this machine only. Set MOORAGE_METRICS_TOKEN "
                         "to scrape them from elsewhere.", "detail": {}}, status=403)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: every figure above, for whoever may read them."""
    refused = _allowed(request)
    if refused is not None:
        return refused
    refresh_pool_gauges()
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)
