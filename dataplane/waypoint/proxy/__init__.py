"""The waypoint's data path: HBONE in (server.py), HTTP/1.1 and HTTP/2 downstream codecs, the
per-request filter pipeline (pipeline.py), and HBONE or TCP out with pooled HTTP/1.1 (upstream.py)."""
