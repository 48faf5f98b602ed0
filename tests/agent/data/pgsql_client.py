"""A psycopg 3 client for the live PostgreSQL tests: connects (now with --connect-early, else after
"go"), says READY, waits for "go" on stdin, runs its scenario, prints one JSON line per statement:
what the client itself saw (the SQL sent, cursor.statusmessage, rowcount, the raw text of the first
value of the result, e.sqlstate for an error), then exits."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import psycopg

# (SQL, parameters) run with prepare=True, one common type each (NULL among them).
TYPED = [
    ("SELECT %s::int8", 42),
    ("SELECT %s::text", "it's text"),
    ("SELECT %s::float8", 2.5),
    ("SELECT %s::bool", True),
    ("SELECT %s::int4", None),
    ("SELECT %s::timestamptz", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ("SELECT %s::bytea", b"\x00\xffab"),
]


def report(cur: psycopg.Cursor, sql: str, **extra: object) -> None:
    first = None
    result = cur.pgresult
    if result is not None and result.ntuples and result.nfields:
        value = result.get_value(0, 0)
        first = None if value is None else bytes(value).decode()
    column = cur.description[0].name if cur.description else None
    print(json.dumps({"sql": sql, "status": cur.statusmessage, "rowcount": cur.rowcount, "first": first,
                      "column": column, **extra}))  # fmt: skip


def run(conn: psycopg.Connection, scenario: str) -> None:
    cur = conn.cursor()
    if scenario == "simple":
        for sql in ("CREATE TEMP TABLE items (id int, name text)",
                    "INSERT INTO items VALUES (1, 'apple'), (2, 'pear')",
                    "SELECT name FROM items ORDER BY id",
                    "SELECT pg_sleep(0.2)"):  # fmt: skip
            cur.execute(sql, prepare=False)
            report(cur, sql)
        try:
            cur.execute("SELECT * FROM no_such_table", prepare=False)
        except psycopg.Error as e:
            print(json.dumps({"sql": "SELECT * FROM no_such_table", "sqlstate": e.sqlstate}))
        sql = "SELECT 1 AS a; SELECT 2 AS b"
        cur.execute(sql, prepare=False)  # a simple Query with two statements: one result each
        sets = []
        while True:
            sets.append((cur.description[0].name, bytes(cur.pgresult.get_value(0, 0)).decode(), cur.statusmessage))
            if not cur.nextset():
                break
        print(json.dumps({"sql": sql, "sets": sets}))
        with cur.copy("COPY items TO STDOUT") as copy:
            data = b"".join(bytes(b) for b in copy)
        print(json.dumps({"sql": "COPY items TO STDOUT", "status": cur.statusmessage, "data": data.decode()}))
        with cur.copy("COPY items FROM STDIN") as copy:
            copy.write_row((3, "fig"))
        print(json.dumps({"sql": "COPY items FROM STDIN", "status": cur.statusmessage}))
    elif scenario == "prepared":
        for sql, value in TYPED:
            cur.execute(sql, (value,), prepare=True)
            report(cur, sql, prepared=True)
        try:
            cur.execute("SELECT 1 / %s::int4", (0,), prepare=True)
        except psycopg.Error as e:
            print(json.dumps({"sql": "SELECT 1 / %s::int4", "sqlstate": e.sqlstate}))
    else:
        raise SystemExit(f"unknown scenario {scenario}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conninfo", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--connect-early", action="store_true")
    args = parser.parse_args()
    conn = psycopg.connect(args.conninfo, autocommit=True) if args.connect_early else None
    if conn is not None:
        conn.execute("SELECT 1")  # the startup is long over when the tracer attaches
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if conn is None:
        conn = psycopg.connect(args.conninfo, autocommit=True)
    run(conn, args.scenario)
    conn.close()


if __name__ == "__main__":
    main()
