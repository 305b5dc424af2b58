"""The mixer's aiohttp application: the one place that builds every service and wires them.

:func:`create_app` makes the :class:`~mixer.core.Mixer` and each subsystem, and passes
each one the services it uses (no module looks a sibling up through the app). The routes
each module adds are listed in its docstring: :mod:`mixer.signaling` (``/ws``, lesson API,
``/api/stats``, ``/healthz``), :mod:`mixer.dashboard` (dashboard, ``/metrics``,
``/readyz``), :mod:`mixer.browser` (browser pages, observers, comments),
:mod:`mixer.publisher` (``/api/recorder``), :mod:`mixer.analytics` (reports, hand raise).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from syncclass.config import CountyConfig

from .analytics import setup_analytics
from .browser import setup_browser
from .cluster import Cluster, node_of, setup_cluster
from .core import MIXER_KEY, Mixer
from .dashboard import setup_ops
from .guard import RedactingAccessLogger, setup_guard
from .publisher import setup_recording
from .signaling import setup_signaling

logger = logging.getLogger(__name__)


CLIENT_HEADER = "X-Syncclass-Client"
"""The client's address as the node's front saw it (a media worker only: it serves a unix
socket in a folder only the mixer's user may enter, so only the front can set it)."""


SCHEME_HEADER = "X-Syncclass-Scheme"
"""``http`` or ``https`` as the client reached the front (same trust as CLIENT_HEADER)."""


@web.middleware
async def _forwarded_client(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The front's client address as ``request.remote`` (rate limits, loopback checks and
    logs see the real client, not the front) and its scheme (Secure cookies behind TLS)."""
    client = request.headers.get(CLIENT_HEADER)
    if client is not None:
        scheme = request.headers.get(SCHEME_HEADER)
        request = request.clone(remote=client, scheme="https" if scheme == "https"
                                else request.scheme)
    return await handler(request)


def create_app(config: CountyConfig, *, resume_lessons: bool = False,
               lessons_path: Path | None = None, behind_front: bool = False,
               node_id: str | None = None, worker: int | None = None) -> web.Application:
    """The mixer's app. ``resume_lessons``: reload the live lessons a previous process
    persisted in ``mixer.data_dir`` (the ``syncclass mixer`` command does);
    ``lessons_path``: where they are kept (default ``<data_dir>/lessons.json``);
    ``behind_front``: a media worker of a node (:mod:`mixer.node`), served only on its
    private unix socket, that takes the client's address from the front's header;
    ``node_id``: this process's node of ``mixer.cluster`` (else ``mixer.cluster.node_id``);
    with ``mixer.cluster`` live lessons resume from Redis instead, on whichever node holds
    them; ``worker``: this app is media worker ``worker`` of its node (with
    ``mixer.cluster`` it beats for the node with its part, :class:`~mixer.cluster.Cluster`)."""
    # Access log lines without query strings: no credential ever reaches the log.
    app = web.Application(client_max_size=config.mixer.max_message_bytes,
                          handler_args={"access_log_class": RedactingAccessLogger},
                          middlewares=[_forwarded_client] if behind_front else [])
    mixer = Mixer(config, lessons_path)
    app[MIXER_KEY] = mixer
    cluster = (Cluster(mixer, config.mixer.cluster, node_of(config, node_id), worker=worker)
               if config.mixer.cluster is not None else None)
    if cluster is not None:
        # Another node may have resumed them meanwhile: Redis decides who holds a lesson.
        resume_lessons = False

    async def on_shutdown(app: web.Application) -> None:
        await mixer.aclose()

    async def on_startup(app: web.Application) -> None:
        # After every subsystem attached its media hooks: a restored lesson's media
        # pipeline gets the recorder and analytics taps like a fresh one.
        for lesson in mixer.restore_lessons() if resume_lessons else []:
            logger.info("lesson %s: resumed after a mixer restart", lesson.lesson_id)

    app.on_shutdown.append(on_shutdown)
    if cluster is not None:
        setup_cluster(app, cluster)
    # Each subsystem adds its routes, event subscribers and media taps.
    ops = setup_ops(app, mixer)  # dashboard, /metrics, /readyz, alerts, webhooks
    observers = setup_browser(app, mixer)  # browser pages + observers
    # Who may read what; connection limits (GuardedAppRunner).
    guard = setup_guard(app, mixer, observer_for_token=observers.observer_for_token,
                        session_user=ops.user_of)
    publisher = setup_recording(app, mixer)  # 同步录播: ZeroMQ to recorders, /api/recorder
    ops.netstats.recorder_state = publisher.summary  # the dashboard's "Recorder" field
    # Attendance, speech, S-T, reports, hand raise; it shares the dashboard's health sampler.
    analytics = setup_analytics(app, mixer, netstats=ops.netstats)
    setup_signaling(app, mixer, guard=guard, observers=observers,
                    place=cluster.place if cluster is not None else None)
    if cluster is not None:
        ops.cluster_state = cluster.summary  # the dashboard's and /metrics' nodes
        cluster.revocations = ops.revocations  # a logout holds on every node
        ops.revocations.on_revoke.append(cluster.revoked)
        cluster.checkpoints = analytics  # the report survives a fail-over
    app.on_startup.append(on_startup)
    return app
