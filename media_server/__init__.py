"""Outputs for people outside the lesson: live HLS and replay, served from the recorder's
folders and the archive by a plain HTTP server that scales apart from the mixer."""
