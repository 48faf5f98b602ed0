"""The order worker of the regression investigation (notebooks/3-regression.ipynb): a small
CPU-bound Python program that processes synthetic orders in a loop, one step per function:

    parse_order -> price_order -> checksum -> render_receipt

``--release v2`` is "the change": ``checksum`` computes its Adler-32 byte by byte in Python (a
hand-written loop someone found "simpler") instead of calling zlib, so that one function becomes
slower and takes a larger share of the CPU; every other function runs the same code.

    python notebooks/order_worker.py --seconds 6 [--release v1|v2] [--ready-file PATH]

tools/notebook_captures.py runs it once per release and profiles it with ``pxq capture``.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

ADLER_MOD = 65521


def make_orders(count: int) -> list[bytes]:
    """Deterministic order documents (no randomness: both releases see the same input)."""
    orders = []
    for n in range(count):
        items = [{"sku": f"SKU-{(n * 7 + i) % 97:03d}", "qty": 1 + (n + i) % 4, "cents": 199 + (n * 13 + i) % 900}
                 for i in range(1 + n % 6)]  # fmt: skip
        orders.append(json.dumps({"id": n, "customer": f"c{n % 50}", "items": items}).encode())
    return orders


def parse_order(raw: bytes) -> dict:
    return json.loads(raw)


def price_order(order: dict) -> int:
    subtotal = sum(item["qty"] * item["cents"] for item in order["items"])
    return subtotal + subtotal * 8 // 100  # tax


def checksum(payload: bytes, by_hand: bool) -> int:
    """Adler-32 of ``payload``: zlib's (v1), or the same value one Python step per byte (v2)."""
    if not by_hand:
        return zlib.adler32(payload)
    a, b = 1, 0
    for byte in payload:
        a = (a + byte) % ADLER_MOD
        b = (b + a) % ADLER_MOD
    return (b << 16) | a


def render_receipt(order: dict, total: int, digest: int) -> str:
    lines = [f"order {order['id']} for {order['customer']}"]
    lines += [f"  {item['qty']} x {item['sku']} @ {item['cents'] / 100:.2f}" for item in order["items"]]
    lines.append(f"total {total / 100:.2f}  check {digest:08x}")
    return "\n".join(lines)


def process(raw: bytes, by_hand: bool) -> str:
    order = parse_order(raw)
    total = price_order(order)
    return render_receipt(order, total, checksum(raw, by_hand))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to work")
    parser.add_argument("--release", choices=("v1", "v2"), default="v1", help="v2: the slower checksum")
    parser.add_argument("--ready-file", type=Path, help="written once the orders are made, before the work")
    opts = parser.parse_args(argv)
    by_hand = opts.release == "v2"
    orders = make_orders(500)
    if opts.ready_file:
        opts.ready_file.write_text("ready\n")
    done = 0
    deadline = time.monotonic() + opts.seconds
    while time.monotonic() < deadline:
        for raw in orders:
            process(raw, by_hand)
        done += len(orders)
    print(f"order_worker {opts.release}: {done} orders in {opts.seconds:g}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
