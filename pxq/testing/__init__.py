"""Real workloads and real-traffic captures for pxq's tests and demo.

Nothing here fakes a server or a packet: :mod:`pxq.testing.workload` runs Debian's nginx in front
of a Python ``http.server`` backend on loopback, :mod:`pxq.testing.recording_proxy` records the
traffic that really flows to nginx, and :mod:`pxq.testing.make_capture` turns it into a capture
that ``pxq run --from`` replays. Until the eBPF socket tracer lands, that recording proxy is how
``http_events`` rows are made from live traffic.
"""
