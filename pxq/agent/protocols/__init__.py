"""User-space protocol parsers: bytes of one connection in, request/response records out.

One folder per protocol (``http1/``: stitcher, row buffer, inference), the interface they meet
(:mod:`.interface`) and the registry naming each (:mod:`.registry`).
"""
