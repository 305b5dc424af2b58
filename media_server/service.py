"""Builds the media server's application: live HLS (:mod:`media_server.app`) and replay
(:mod:`media_server.replay`) over the recorder's folders and archive."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from syncclass.config import CountyConfig

from .app import MediaServer, add_live
from .archive import ArchiveSource, LocalArchiveSource, ReplayState, S3ArchiveSource
from .replay import Replay, add_replay


def archive_source(config: CountyConfig, archive_dir: Path | None = None) -> ArchiveSource:
    """The recorder's archive as configured: S3 (``recorder.archive: s3``) or a folder."""
    rec = config.recorder
    if rec.archive == "s3":
        assert rec.s3 is not None  # validated with the config
        return S3ArchiveSource(rec.s3)
    return LocalArchiveSource(archive_dir or Path(rec.archive_dir))


def create_app(config: CountyConfig, live_dir: Path | None = None,
               data_dir: Path | None = None, api_token: str | None = None,
               archive_dir: Path | None = None, mixer_data_dir: Path | None = None
               ) -> web.Application:
    """The media server's application. ``live_dir``: the recorder's lesson folders;
    ``data_dir``: the server's own files; ``archive_dir``: a local archive;
    ``mixer_data_dir``: the mixer's reports and live comments (defaults from ``config``)."""
    cfg = config.media_server
    live = live_dir or Path(cfg.live_dir or config.recorder.out_dir)
    data = data_dir or Path(cfg.data_dir)
    mixer_data = mixer_data_dir or Path(cfg.mixer_data_dir or config.mixer.data_dir)
    app = web.Application()
    server = MediaServer(config, live, data, api_token)
    add_live(app, server)
    add_replay(app, Replay(server, archive_source(config, archive_dir),
                           ReplayState(data / "media.db"), mixer_data, live))
    return app
