"""User-space protocol parsers: bytes of one connection in, request/response records out."""
