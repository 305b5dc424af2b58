"""Recorder: archives composed lessons (同步录播). See issue 3."""
