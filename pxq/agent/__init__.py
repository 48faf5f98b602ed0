"""The node agent: collectors that turn kernel events and /proc into Arrow tables.

``procinfo`` reads process identity from /proc; ``protocols`` holds the user-space protocol
parsers and request/response stitchers that the socket tracer feeds.
"""
