"""The central mixer: decodes every classroom's feed, composes each view in YUV420,
encodes each view once with H.264 and mixes audio per listener (N-1)."""
