"""``/metrics`` in Prometheus text format (prometheus-client), with ``lesson`` and
``classroom`` labels, built at scrape time from :class:`NetStatsCollector`'s latest sample.

Each app has its own :class:`CollectorRegistry` (no process-global state), so several
mixers in one process (tests) do not clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .alerts import AlertEngine
from .core import Mixer
from .netstats import NetStatsCollector
from .webhooks import WebhookSender

__all__ = ["CONTENT_TYPE_LATEST", "SyncclassCollector", "make_registry", "render"]

_CLASSROOM_GAUGES: list[tuple[str, str, Callable[..., float | None]]] = [
    ("rtt_seconds", "Round-trip time mixer to classroom (RTCP).",
     lambda h: None if h.rtt_ms is None else h.rtt_ms / 1000.0),
    ("jitter_seconds", "Interarrival jitter of the classroom's uplink.",
     lambda h: None if h.jitter_ms is None else h.jitter_ms / 1000.0),
    ("glass_to_glass_latency_seconds", "Capture-to-display latency the classroom reports "
     "(worst source it shows).", lambda h: None if h.latency_ms is None else h.latency_ms / 1000.0),
    ("audio_level_dbov", "Level of the classroom's microphone at the mixer, dBov.",
     lambda h: h.audio_level_dbov),
    ("frozen", "1 while the classroom's camera sends no frames.", lambda h: float(h.frozen)),
]


class SyncclassCollector(Collector):
    """Prometheus collector over the mixer's health sample and counters."""

    def __init__(self, mixer: Mixer, netstats: NetStatsCollector,
                 alerts: AlertEngine | None = None,
                 webhooks: list[WebhookSender] | None = None) -> None:
        self.mixer = mixer
        self.netstats = netstats
        self.alerts = alerts
        self.webhooks = webhooks or []
        self.cluster_state: Callable[[], dict[str, Any]] | None = None
        """Several nodes: the registry as this node last read it (``Cluster.summary``)."""

    def collect(self) -> Iterator[Metric]:
        labels = ["lesson", "classroom"]
        lessons = GaugeMetricFamily("syncclass_lessons", "Lessons by state.", labels=["state"])
        counts = {"idle": 0, "live": 0, "ended": 0}
        for lesson in self.mixer.lessons.all_lessons():
            counts[lesson.state] = counts.get(lesson.state, 0) + 1
        for state, n in sorted(counts.items()):
            lessons.add_metric([state], n)
        yield lessons
        elapsed = GaugeMetricFamily("syncclass_lesson_elapsed_seconds",
                                    "Time since a live lesson started.",
                                    labels=["lesson", "subject", "teacher"])
        mh = self.netstats.mixer_health()
        for info in mh.lessons if mh else []:
            if info["state"] == "live" and info.get("elapsed_s") is not None:
                elapsed.add_metric([info["lesson_id"], info["subject"], info["teacher"]],
                                   info["elapsed_s"])
        yield elapsed

        snap = self.netstats.snapshot()
        connected = GaugeMetricFamily(
            "syncclass_classroom_up", "1 if the classroom's media is flowing in its lesson, "
            "0 if it is connected but not in a lesson or offline.", labels=[*labels, "state"])
        gauges = {name: GaugeMetricFamily(f"syncclass_classroom_{name}", doc, labels=labels)
                  for name, doc, _ in _CLASSROOM_GAUGES}
        loss = GaugeMetricFamily("syncclass_classroom_packet_loss_ratio",
                                 "Packets lost over the last interval (0-1).",
                                 labels=[*labels, "direction"])
        bitrate = GaugeMetricFamily("syncclass_classroom_bitrate_bits_per_second",
                                    "Media bitrate to/from the classroom.",
                                    labels=[*labels, "direction"])
        fps = GaugeMetricFamily("syncclass_classroom_frames_per_second",
                                "Video frame rate: in = its camera at the mixer, out = its view "
                                "sent to it, received = what it reports decoding.",
                                labels=[*labels, "direction"])
        freezes = CounterMetricFamily("syncclass_classroom_freezes",
                                      "Gaps in the classroom's camera frames longer than "
                                      "ops.freeze_gap_ms, this lesson.", labels=labels)
        reconnects = CounterMetricFamily("syncclass_classroom_reconnects",
                                         "Signaling reconnections of the classroom's agent.",
                                         labels=["classroom"])
        frames = CounterMetricFamily("syncclass_classroom_frames_in",
                                     "Camera frames decoded from the classroom, this lesson.",
                                     labels=labels)
        for cid, h in sorted(snap.items()):
            lv = [h.lesson_id or "", cid]
            connected.add_metric([*lv, h.state], 1.0 if h.state == "in_lesson" else 0.0)
            for name, _, get in _CLASSROOM_GAUGES:
                value = get(h)
                if value is not None:
                    gauges[name].add_metric(lv, value)
            for direction, pct in (("in", h.loss_in_percent), ("out", h.loss_out_percent)):
                if pct is not None:
                    loss.add_metric([*lv, direction], pct / 100.0)
            for direction, kbps in (("in", h.bitrate_in_kbps), ("out", h.bitrate_out_kbps)):
                if kbps is not None:
                    bitrate.add_metric([*lv, direction], kbps * 1000.0)
            for direction, rate in (("in", h.fps_in), ("out", h.fps_out),
                                    ("received", h.fps_received)):
                if rate is not None:
                    fps.add_metric([*lv, direction], rate)
            freezes.add_metric(lv, h.freezes)
            frames.add_metric(lv, h.frames_in)
            reconnects.add_metric([cid], h.reconnects)
        yield connected
        yield from gauges.values()
        yield loss
        yield bitrate
        yield fps
        yield freezes
        yield frames
        yield reconnects

        if mh is not None:
            yield GaugeMetricFamily("syncclass_mixer_cpu_percent",
                                    "Mixer process CPU, % of one core.", value=mh.cpu_percent)
            yield GaugeMetricFamily("syncclass_mixer_event_loop_lag_seconds",
                                    "How late the health sampler woke up.",
                                    value=mh.loop_lag_ms / 1000.0)
            vl = ["lesson", "view"]
            enc = GaugeMetricFamily("syncclass_view_encode_seconds",
                                    "Mean H.264 encode time per frame of a view.", labels=vl)
            vfps = GaugeMetricFamily("syncclass_view_frames_per_second",
                                     "Composed and encoded frames per second of a view.",
                                     labels=vl)
            skipped = CounterMetricFamily("syncclass_view_frames_skipped",
                                          "Frames the compositor skipped (late).", labels=vl)
            subs = GaugeMetricFamily("syncclass_view_subscribers",
                                     "Classrooms receiving a view.", labels=vl)
            for v in mh.views:
                enc.add_metric([v.lesson_id, v.view], v.encode_ms / 1000.0)
                vfps.add_metric([v.lesson_id, v.view], v.fps)
                skipped.add_metric([v.lesson_id, v.view], v.frames_skipped)
                subs.add_metric([v.lesson_id, v.view], v.subscribers)
            yield enc
            yield vfps
            yield skipped
            yield subs
        if self.alerts is not None:
            firing = GaugeMetricFamily("syncclass_alerts_firing", "Alerts raised, not resolved.",
                                       labels=["classroom", "kind"])
            for cid, kind in self.alerts.firing:
                firing.add_metric([cid, kind], 1.0)
            yield firing
            yield CounterMetricFamily("syncclass_alerts_raised", "Alerts raised.",
                                      value=self.alerts.raised)
        if self.webhooks:
            wh = CounterMetricFamily("syncclass_webhook_events", "Webhook events by outcome.",
                                     labels=["url", "outcome"])
            for s in self.webhooks:
                wh.add_metric([s.shown_url, "delivered"], s.delivered)
                wh.add_metric([s.shown_url, "failed"], s.failed)
                wh.add_metric([s.shown_url, "dropped"], s.dropped)
            yield wh
        if self.cluster_state is not None:
            yield from _cluster_metrics(self.cluster_state())


def _cluster_metrics(state: dict[str, Any]) -> Iterator[Metric]:
    """Every live node of the registry: lessons, classrooms, CPU, heartbeat age."""
    up = GaugeMetricFamily("syncclass_cluster_redis_up",
                           "1 while this node reaches Redis (several nodes).", labels=["node"])
    up.add_metric([state["node_id"]], 1.0 if state["redis_up"] else 0.0)
    yield up
    families = {
        "lessons": GaugeMetricFamily("syncclass_node_lessons", "Live lessons on the node.",
                                     labels=["node", "url"]),
        "sessions": GaugeMetricFamily("syncclass_node_classrooms",
                                      "Classrooms connected to the node.", labels=["node", "url"]),
        "cpu_percent": GaugeMetricFamily("syncclass_node_cpu_percent",
                                         "The node process's CPU, % of one core.",
                                         labels=["node", "url"]),
    }
    beat = GaugeMetricFamily("syncclass_node_heartbeat_age_seconds",
                             "Time since the node's last heartbeat (by its clock).",
                             labels=["node", "url"])
    for node in state["nodes"]:
        labels = [node["node_id"], node["url"]]
        for field, family in families.items():
            family.add_metric(labels, float(node[field]))
        beat.add_metric(labels, max(0.0, (state["checked_ms"] - node["heartbeat_ms"]) / 1000))
    yield from families.values()
    yield beat


def make_registry(collector: SyncclassCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(registry)
