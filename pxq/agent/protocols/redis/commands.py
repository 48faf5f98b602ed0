"""Redis command names and the shapes of their arguments, and ``req_args`` as Pixie writes it.

``req_cmd`` is the command's name in capitals, two words for a container command and its
subcommand (``CLIENT SETNAME``, ``CONFIG GET``), and ``req_args`` the remaining arguments as a JSON
object keyed by the argument names of the command's documented syntax, or as a JSON array where
the syntax has no simple shape. This is Pixie's ``GetCmdAndArgs``/``FormatArrayMessage``
(src/stirling/source_connectors/socket_tracer/protocols/redis/cmd_args.cc and formatting.cc,
pixie-io/pixie at 44d42f1d): the same table of commands, the same three argument shapes (a
lower-case name is one fixed value, ``name [name ...]`` a list of the rest, ``[name]`` an optional
value), the same special cases (SET's options, SSCAN's MATCH/COUNT, EVALSHA's keys and values) and
the same fallback to a JSON array when the values do not fit the shape. Commands of Redis 7 that
Pixie's table (Redis 6) lacks are known by name, their arguments written as a JSON array.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from pxq.agent.protocols.interface import SECRET_MARKER

# Pixie's kCmdList, in its order: (name, argument descriptions as redis.io documents them).
# Generated from cmd_args.cc (pixie-io/pixie 44d42f1d, Apache-2.0), itself generated from
# redis.io's command documentation.
PIXIE_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ACL LOAD", ()),
    ("ACL SAVE", ()),
    ("ACL LIST", ()),
    ("ACL USERS", ()),
    ("ACL GETUSER", ("username",)),
    ("ACL SETUSER", ("username", "[rule [rule ...]]")),
    ("ACL DELUSER", ("username [username ...]",)),
    ("ACL CAT", ("[categoryname]",)),
    ("ACL GENPASS", ("[bits]",)),
    ("ACL WHOAMI", ()),
    ("ACL LOG", ("[count or RESET]",)),
    ("ACL HELP", ()),
    ("APPEND", ("key", "value")),
    ("AUTH", ("[username]", "password")),
    ("BGREWRITEAOF", ()),
    ("BGSAVE", ("[SCHEDULE]",)),
    ("BITCOUNT", ("key", "[start end]")),
    (
        "BITFIELD",
        (
            "key",
            "[GET type offset]",
            "[SET type offset value]",
            "[INCRBY type offset increment]",
            "[OVERFLOW WRAP|SAT|FAIL]",
        ),
    ),
    ("BITOP", ("operation", "destkey", "key [key ...]")),
    ("BITPOS", ("key", "bit", "[start]", "[end]")),
    ("BLPOP", ("key [key ...]", "timeout")),
    ("BRPOP", ("key [key ...]", "timeout")),
    ("BRPOPLPUSH", ("source", "destination", "timeout")),
    ("BLMOVE", ("source", "destination", "LEFT|RIGHT", "LEFT|RIGHT", "timeout")),
    ("BZPOPMIN", ("key [key ...]", "timeout")),
    ("BZPOPMAX", ("key [key ...]", "timeout")),
    ("CLIENT CACHING", ("YES|NO",)),
    ("CLIENT ID", ()),
    ("CLIENT INFO", ()),
    (
        "CLIENT KILL",
        (
            "[ip:port]",
            "[ID client-id]",
            "[TYPE normal|master|slave|pubsub]",
            "[USER username]",
            "[ADDR ip:port]",
            "[SKIPME yes/no]",
        ),
    ),
    ("CLIENT LIST", ("[TYPE normal|master|replica|pubsub]", "[ID client-id [client-id ...]]")),
    ("CLIENT GETNAME", ()),
    ("CLIENT GETREDIR", ()),
    ("CLIENT UNPAUSE", ()),
    ("CLIENT PAUSE", ("timeout", "[WRITE|ALL]")),
    ("CLIENT REPLY", ("ON|OFF|SKIP",)),
    ("CLIENT SETNAME", ("connection-name",)),
    (
        "CLIENT TRACKING",
        (
            "ON|OFF",
            "[REDIRECT client-id]",
            "[PREFIX prefix [PREFIX prefix ...]]",
            "[BCAST]",
            "[OPTIN]",
            "[OPTOUT]",
            "[NOLOOP]",
        ),
    ),
    ("CLIENT TRACKINGINFO", ()),
    ("CLIENT UNBLOCK", ("client-id", "[TIMEOUT|ERROR]")),
    ("CLUSTER ADDSLOTS", ("slot [slot ...]",)),
    ("CLUSTER BUMPEPOCH", ()),
    ("CLUSTER COUNT-FAILURE-REPORTS", ("node-id",)),
    ("CLUSTER COUNTKEYSINSLOT", ("slot",)),
    ("CLUSTER DELSLOTS", ("slot [slot ...]",)),
    ("CLUSTER FAILOVER", ("[FORCE|TAKEOVER]",)),
    ("CLUSTER FLUSHSLOTS", ()),
    ("CLUSTER FORGET", ("node-id",)),
    ("CLUSTER GETKEYSINSLOT", ("slot", "count")),
    ("CLUSTER INFO", ()),
    ("CLUSTER KEYSLOT", ("key",)),
    ("CLUSTER MEET", ("ip", "port")),
    ("CLUSTER MYID", ()),
    ("CLUSTER NODES", ()),
    ("CLUSTER REPLICATE", ("node-id",)),
    ("CLUSTER RESET", ("[HARD|SOFT]",)),
    ("CLUSTER SAVECONFIG", ()),
    ("CLUSTER SET-CONFIG-EPOCH", ("config-epoch",)),
    ("CLUSTER SETSLOT", ("slot", "IMPORTING|MIGRATING|STABLE|NODE", "[node-id]")),
    ("CLUSTER SLAVES", ("node-id",)),
    ("CLUSTER REPLICAS", ("node-id",)),
    ("CLUSTER SLOTS", ()),
    ("COMMAND", ()),
    ("COMMAND COUNT", ()),
    ("COMMAND GETKEYS", ()),
    ("COMMAND INFO", ("command-name [command-name ...]",)),
    ("CONFIG GET", ("parameter",)),
    ("CONFIG REWRITE", ()),
    ("CONFIG SET", ("parameter", "value")),
    ("CONFIG RESETSTAT", ()),
    ("COPY", ("source", "destination", "[DB destination-db]", "[REPLACE]")),
    ("DBSIZE", ()),
    ("DEBUG OBJECT", ("key",)),
    ("DEBUG SEGFAULT", ()),
    ("DECR", ("key",)),
    ("DECRBY", ("key", "decrement")),
    ("DEL", ("key [key ...]",)),
    ("DISCARD", ()),
    ("DUMP", ("key",)),
    ("ECHO", ("message",)),
    ("EVAL", ("script", "numkeys", "key [key ...]", "arg [arg ...]")),
    ("EVALSHA", ("sha1", "numkeys", "key [key ...]", "arg [arg ...]")),
    ("EXEC", ()),
    ("EXISTS", ("key [key ...]",)),
    ("EXPIRE", ("key", "seconds")),
    ("EXPIREAT", ("key", "timestamp")),
    ("FAILOVER", ("[TO host port [FORCE]]", "[ABORT]", "[TIMEOUT milliseconds]")),
    ("FLUSHALL", ("[ASYNC|SYNC]",)),
    ("FLUSHDB", ("[ASYNC|SYNC]",)),
    ("GEOADD", ("key", "[NX|XX]", "[CH]", "longitude latitude member [longitude latitude member ...]")),
    ("GEOHASH", ("key", "member [member ...]")),
    ("GEOPOS", ("key", "member [member ...]")),
    ("GEODIST", ("key", "member1", "member2", "[m|km|ft|mi]")),
    (
        "GEORADIUS",
        (
            "key",
            "longitude",
            "latitude",
            "radius",
            "m|km|ft|mi",
            "[WITHCOORD]",
            "[WITHDIST]",
            "[WITHHASH]",
            "[COUNT count [ANY]]",
            "[ASC|DESC]",
            "[STORE key]",
            "[STOREDIST key]",
        ),
    ),
    (
        "GEORADIUSBYMEMBER",
        (
            "key",
            "member",
            "radius",
            "m|km|ft|mi",
            "[WITHCOORD]",
            "[WITHDIST]",
            "[WITHHASH]",
            "[COUNT count [ANY]]",
            "[ASC|DESC]",
            "[STORE key]",
            "[STOREDIST key]",
        ),
    ),
    (
        "GEOSEARCH",
        (
            "key",
            "[FROMMEMBER member]",
            "[FROMLONLAT longitude latitude]",
            "[BYRADIUS radius m|km|ft|mi]",
            "[BYBOX width height m|km|ft|mi]",
            "[ASC|DESC]",
            "[COUNT count [ANY]]",
            "[WITHCOORD]",
            "[WITHDIST]",
            "[WITHHASH]",
        ),
    ),
    (
        "GEOSEARCHSTORE",
        (
            "destination",
            "source",
            "[FROMMEMBER member]",
            "[FROMLONLAT longitude latitude]",
            "[BYRADIUS radius m|km|ft|mi]",
            "[BYBOX width height m|km|ft|mi]",
            "[ASC|DESC]",
            "[COUNT count [ANY]]",
            "[WITHCOORD]",
            "[WITHDIST]",
            "[WITHHASH]",
            "[STOREDIST]",
        ),
    ),
    ("GET", ("key",)),
    ("GETBIT", ("key", "offset")),
    ("GETDEL", ("key",)),
    ("GETEX", ("key", "[EX seconds|PX milliseconds|EXAT timestamp|PXAT milliseconds-timestamp|PERSIST]")),
    ("GETRANGE", ("key", "start", "end")),
    ("GETSET", ("key", "value")),
    ("HDEL", ("key", "field [field ...]")),
    ("HELLO", ("[protover [AUTH username password] [SETNAME clientname]]",)),
    ("HEXISTS", ("key", "field")),
    ("HGET", ("key", "field")),
    ("HGETALL", ("key",)),
    ("HINCRBY", ("key", "field", "increment")),
    ("HINCRBYFLOAT", ("key", "field", "increment")),
    ("HKEYS", ("key",)),
    ("HLEN", ("key",)),
    ("HMGET", ("key", "field [field ...]")),
    ("HMSET", ("key", "field value [field value ...]")),
    ("HSET", ("key", "field value [field value ...]")),
    ("HSETNX", ("key", "field", "value")),
    ("HRANDFIELD", ("key", "[count [WITHVALUES]]")),
    ("HSTRLEN", ("key", "field")),
    ("HVALS", ("key",)),
    ("INCR", ("key",)),
    ("INCRBY", ("key", "increment")),
    ("INCRBYFLOAT", ("key", "increment")),
    ("INFO", ("[section]",)),
    ("LOLWUT", ("[VERSION version]",)),
    ("KEYS", ("pattern",)),
    ("LASTSAVE", ()),
    ("LINDEX", ("key", "index")),
    ("LINSERT", ("key", "BEFORE|AFTER", "pivot", "element")),
    ("LLEN", ("key",)),
    ("LPOP", ("key", "[count]")),
    ("LPOS", ("key", "element", "[RANK rank]", "[COUNT num-matches]", "[MAXLEN len]")),
    ("LPUSH", ("key", "element [element ...]")),
    ("LPUSHX", ("key", "element [element ...]")),
    ("LRANGE", ("key", "start", "stop")),
    ("LREM", ("key", "count", "element")),
    ("LSET", ("key", "index", "element")),
    ("LTRIM", ("key", "start", "stop")),
    ("MEMORY DOCTOR", ()),
    ("MEMORY HELP", ()),
    ("MEMORY MALLOC-STATS", ()),
    ("MEMORY PURGE", ()),
    ("MEMORY STATS", ()),
    ("MEMORY USAGE", ("key", "[SAMPLES count]")),
    ("MGET", ("key [key ...]",)),
    ("MODULE LIST", ()),
    ("MODULE LOAD", ("path", "[ arg [arg ...]]")),
    ("MODULE UNLOAD", ("name",)),
    ("MONITOR", ()),
    ("MOVE", ("key", "db")),
    ("MSET", ("key value [key value ...]",)),
    ("MSETNX", ("key value [key value ...]",)),
    ("MULTI", ()),
    ("OBJECT", ("subcommand", "[arguments [arguments ...]]")),
    ("PERSIST", ("key",)),
    ("PEXPIRE", ("key", "milliseconds")),
    ("PEXPIREAT", ("key", "milliseconds-timestamp")),
    ("PFADD", ("key", "element [element ...]")),
    ("PFCOUNT", ("key [key ...]",)),
    ("PFMERGE", ("destkey", "sourcekey [sourcekey ...]")),
    ("PING", ("[message]",)),
    ("PSETEX", ("key", "milliseconds", "value")),
    ("PSUBSCRIBE", ("pattern [pattern ...]",)),
    ("PUBSUB", ("subcommand", "[argument [argument ...]]")),
    ("PTTL", ("key",)),
    ("PUBLISH", ("channel", "message")),
    ("PUNSUBSCRIBE", ("[pattern [pattern ...]]",)),
    ("QUIT", ()),
    ("RANDOMKEY", ()),
    ("READONLY", ()),
    ("READWRITE", ()),
    ("RENAME", ("key", "newkey")),
    ("RENAMENX", ("key", "newkey")),
    ("RESET", ()),
    ("RESTORE", ("key", "ttl", "serialized-value", "[REPLACE]", "[ABSTTL]", "[IDLETIME seconds]", "[FREQ frequency]")),
    ("ROLE", ()),
    ("RPOP", ("key", "[count]")),
    ("RPOPLPUSH", ("source", "destination")),
    ("LMOVE", ("source", "destination", "LEFT|RIGHT", "LEFT|RIGHT")),
    ("RPUSH", ("key", "element [element ...]")),
    ("RPUSHX", ("key", "element [element ...]")),
    ("SADD", ("key", "member [member ...]")),
    ("SAVE", ()),
    ("SCARD", ("key",)),
    ("SCRIPT DEBUG", ("YES|SYNC|NO",)),
    ("SCRIPT EXISTS", ("sha1 [sha1 ...]",)),
    ("SCRIPT FLUSH", ("[ASYNC|SYNC]",)),
    ("SCRIPT KILL", ()),
    ("SCRIPT LOAD", ("script",)),
    ("SDIFF", ("key [key ...]",)),
    ("SDIFFSTORE", ("destination", "key [key ...]")),
    ("SELECT", ("index",)),
    (
        "SET",
        (
            "key",
            "value",
            "[EX seconds|PX milliseconds|EXAT timestamp|PXAT milliseconds-timestamp|KEEPTTL]",
            "[NX|XX]",
            "[GET]",
        ),
    ),
    ("SETBIT", ("key", "offset", "value")),
    ("SETEX", ("key", "seconds", "value")),
    ("SETNX", ("key", "value")),
    ("SETRANGE", ("key", "offset", "value")),
    ("SHUTDOWN", ("[NOSAVE|SAVE]",)),
    ("SINTER", ("key [key ...]",)),
    ("SINTERSTORE", ("destination", "key [key ...]")),
    ("SISMEMBER", ("key", "member")),
    ("SMISMEMBER", ("key", "member [member ...]")),
    ("SLAVEOF", ("host", "port")),
    ("REPLICAOF", ("host", "port")),
    ("SLOWLOG", ("subcommand", "[argument]")),
    ("SMEMBERS", ("key",)),
    ("SMOVE", ("source", "destination", "member")),
    (
        "SORT",
        (
            "key",
            "[BY pattern]",
            "[LIMIT offset count]",
            "[GET pattern [GET pattern ...]]",
            "[ASC|DESC]",
            "[ALPHA]",
            "[STORE destination]",
        ),
    ),
    ("SPOP", ("key", "[count]")),
    ("SRANDMEMBER", ("key", "[count]")),
    ("SREM", ("key", "member [member ...]")),
    ("STRALGO", ("LCS", "algo-specific-argument [algo-specific-argument ...]")),
    ("STRLEN", ("key",)),
    ("SUBSCRIBE", ("channel [channel ...]",)),
    ("SUNION", ("key [key ...]",)),
    ("SUNIONSTORE", ("destination", "key [key ...]")),
    ("SWAPDB", ("index1", "index2")),
    ("SYNC", ()),
    ("PSYNC", ("replicationid", "offset")),
    ("TIME", ()),
    ("TOUCH", ("key [key ...]",)),
    ("TTL", ("key",)),
    ("TYPE", ("key",)),
    ("UNSUBSCRIBE", ("[channel [channel ...]]",)),
    ("UNLINK", ("key [key ...]",)),
    ("UNWATCH", ()),
    ("WAIT", ("numreplicas", "timeout")),
    ("WATCH", ("key [key ...]",)),
    ("ZADD", ("key", "[NX|XX]", "[GT|LT]", "[CH]", "[INCR]", "score member [score member ...]")),
    ("ZCARD", ("key",)),
    ("ZCOUNT", ("key", "min", "max")),
    ("ZDIFF", ("numkeys", "key [key ...]", "[WITHSCORES]")),
    ("ZDIFFSTORE", ("destination", "numkeys", "key [key ...]")),
    ("ZINCRBY", ("key", "increment", "member")),
    (
        "ZINTER",
        ("numkeys", "key [key ...]", "[WEIGHTS weight [weight ...]]", "[AGGREGATE SUM|MIN|MAX]", "[WITHSCORES]"),
    ),
    (
        "ZINTERSTORE",
        ("destination", "numkeys", "key [key ...]", "[WEIGHTS weight [weight ...]]", "[AGGREGATE SUM|MIN|MAX]"),
    ),
    ("ZLEXCOUNT", ("key", "min", "max")),
    ("ZPOPMAX", ("key", "[count]")),
    ("ZPOPMIN", ("key", "[count]")),
    ("ZRANDMEMBER", ("key", "[count [WITHSCORES]]")),
    ("ZRANGESTORE", ("dst", "src", "min", "max", "[BYSCORE|BYLEX]", "[REV]", "[LIMIT offset count]")),
    ("ZRANGE", ("key", "min", "max", "[BYSCORE|BYLEX]", "[REV]", "[LIMIT offset count]", "[WITHSCORES]")),
    ("ZRANGEBYLEX", ("key", "min", "max", "[LIMIT offset count]")),
    ("ZREVRANGEBYLEX", ("key", "max", "min", "[LIMIT offset count]")),
    ("ZRANGEBYSCORE", ("key", "min", "max", "[WITHSCORES]", "[LIMIT offset count]")),
    ("ZRANK", ("key", "member")),
    ("ZREM", ("key", "member [member ...]")),
    ("ZREMRANGEBYLEX", ("key", "min", "max")),
    ("ZREMRANGEBYRANK", ("key", "start", "stop")),
    ("ZREMRANGEBYSCORE", ("key", "min", "max")),
    ("ZREVRANGE", ("key", "start", "stop", "[WITHSCORES]")),
    ("ZREVRANGEBYSCORE", ("key", "max", "min", "[WITHSCORES]", "[LIMIT offset count]")),
    ("ZREVRANK", ("key", "member")),
    ("ZSCORE", ("key", "member")),
    (
        "ZUNION",
        ("numkeys", "key [key ...]", "[WEIGHTS weight [weight ...]]", "[AGGREGATE SUM|MIN|MAX]", "[WITHSCORES]"),
    ),
    ("ZMSCORE", ("key", "member [member ...]")),
    (
        "ZUNIONSTORE",
        ("destination", "numkeys", "key [key ...]", "[WEIGHTS weight [weight ...]]", "[AGGREGATE SUM|MIN|MAX]"),
    ),
    ("SCAN", ("cursor", "[MATCH pattern]", "[COUNT count]", "[TYPE type]")),
    ("SSCAN", ("key", "cursor", "[MATCH pattern]", "[COUNT count]")),
    ("HSCAN", ("key", "cursor", "[MATCH pattern]", "[COUNT count]")),
    ("ZSCAN", ("key", "cursor", "[MATCH pattern]", "[COUNT count]")),
    ("XINFO", ("[CONSUMERS key groupname]", "[GROUPS key]", "[STREAM key]", "[HELP]")),
    (
        "XADD",
        (
            "key",
            "[NOMKSTREAM]",
            "[MAXLEN|MINID [=|~] threshold [LIMIT count]]",
            "*|ID",
            "field value [field value ...]",
        ),
    ),
    ("XTRIM", ("key", "MAXLEN|MINID [=|~] threshold [LIMIT count]")),
    ("XDEL", ("key", "ID [ID ...]")),
    ("XRANGE", ("key", "start", "end", "[COUNT count]")),
    ("XREVRANGE", ("key", "end", "start", "[COUNT count]")),
    ("XLEN", ("key",)),
    ("XREAD", ("[COUNT count]", "[BLOCK milliseconds]", "STREAMS", "key [key ...]", "ID [ID ...]")),
    (
        "XGROUP",
        (
            "[CREATE key groupname ID|$ [MKSTREAM]]",
            "[SETID key groupname ID|$]",
            "[DESTROY key groupname]",
            "[CREATECONSUMER key groupname consumername]",
            "[DELCONSUMER key groupname consumername]",
        ),
    ),
    (
        "XREADGROUP",
        (
            "GROUP group consumer",
            "[COUNT count]",
            "[BLOCK milliseconds]",
            "[NOACK]",
            "STREAMS",
            "key [key ...]",
            "ID [ID ...]",
        ),
    ),
    ("XACK", ("key", "group", "ID [ID ...]")),
    (
        "XCLAIM",
        (
            "key",
            "group",
            "consumer",
            "min-idle-time",
            "ID [ID ...]",
            "[IDLE ms]",
            "[TIME ms-unix-time]",
            "[RETRYCOUNT count]",
            "[FORCE]",
            "[JUSTID]",
        ),
    ),
    ("XAUTOCLAIM", ("key", "group", "consumer", "min-idle-time", "start", "[COUNT count]", "[JUSTID]")),
    ("XPENDING", ("key", "group", "[[IDLE min-idle-time] start end count [consumer]]")),
    ("LATENCY DOCTOR", ()),
    ("LATENCY GRAPH", ("event",)),
    ("LATENCY HISTORY", ("event",)),
    ("LATENCY LATEST", ()),
    ("LATENCY RESET", ("[event [event ...]]",)),
    ("LATENCY HELP", ()),
    ("SENTINEL", ()),
    ("REPLCONF ACK", ("offset",)),
)

# Commands of Redis 7.0 (``COMMAND LIST`` of redis-server 7.0.15, subcommands ``X|Y`` written
# ``X Y``) that PIXIE_COMMANDS does not name: known as commands, arguments as a JSON array.
REDIS7_COMMANDS: tuple[str, ...] = (
    "ACL",
    "ACL DRYRUN",
    "ASKING",
    "BITFIELD_RO",
    "BLMPOP",
    "BZMPOP",
    "CLIENT",
    "CLIENT HELP",
    "CLIENT NO-EVICT",
    "CLUSTER",
    "CLUSTER ADDSLOTSRANGE",
    "CLUSTER DELSLOTSRANGE",
    "CLUSTER HELP",
    "CLUSTER LINKS",
    "CLUSTER SHARDS",
    "COMMAND DOCS",
    "COMMAND GETKEYSANDFLAGS",
    "COMMAND HELP",
    "COMMAND LIST",
    "CONFIG",
    "CONFIG HELP",
    "DEBUG",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXPIRETIME",
    "FCALL",
    "FCALL_RO",
    "FUNCTION",
    "FUNCTION DELETE",
    "FUNCTION DUMP",
    "FUNCTION FLUSH",
    "FUNCTION HELP",
    "FUNCTION KILL",
    "FUNCTION LIST",
    "FUNCTION LOAD",
    "FUNCTION RESTORE",
    "FUNCTION STATS",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "LATENCY",
    "LATENCY HISTOGRAM",
    "LCS",
    "LMPOP",
    "MEMORY",
    "MIGRATE",
    "MODULE",
    "MODULE HELP",
    "MODULE LOADEX",
    "OBJECT ENCODING",
    "OBJECT FREQ",
    "OBJECT HELP",
    "OBJECT IDLETIME",
    "OBJECT REFCOUNT",
    "PEXPIRETIME",
    "PFDEBUG",
    "PFSELFTEST",
    "PUBSUB CHANNELS",
    "PUBSUB HELP",
    "PUBSUB NUMPAT",
    "PUBSUB NUMSUB",
    "PUBSUB SHARDCHANNELS",
    "PUBSUB SHARDNUMSUB",
    "REPLCONF",
    "RESTORE-ASKING",
    "SCRIPT",
    "SCRIPT HELP",
    "SINTERCARD",
    "SLOWLOG GET",
    "SLOWLOG HELP",
    "SLOWLOG LEN",
    "SLOWLOG RESET",
    "SORT_RO",
    "SPUBLISH",
    "SSUBSCRIBE",
    "SUBSTR",
    "SUNSUBSCRIBE",
    "XGROUP CREATE",
    "XGROUP CREATECONSUMER",
    "XGROUP DELCONSUMER",
    "XGROUP DESTROY",
    "XGROUP HELP",
    "XGROUP SETID",
    "XINFO CONSUMERS",
    "XINFO GROUPS",
    "XINFO HELP",
    "XINFO STREAM",
    "XSETID",
    "ZINTERCARD",
    "ZMPOP",
)


class ArgFormat(Enum):
    FIXED = "fixed"  # one value, required
    LIST = "list"  # every value left (one or more)
    OPT = "opt"  # one value if any is left


@dataclass(frozen=True)
class ArgDesc:
    name: str
    sub_fields: tuple[str, ...]
    format: ArgFormat


def _lower_alnum(name: str) -> bool:
    # Pixie's IsLowerAlphaNum: every character a-z or 0-9 (the empty name passes).
    return all("a" <= c <= "z" or "0" <= c <= "9" for c in name)


def _parse_arg_desc(desc: str) -> ArgDesc | None:
    """One argument description as Pixie's ParseArgDescs reads it, None where it has no shape."""
    if _lower_alnum(desc):
        return ArgDesc(desc, (), ArgFormat.FIXED)
    if desc.endswith(" ...]"):
        pos = desc.find(" [")
        if pos >= 0:
            name = desc[:pos]
            sub_fields = tuple(part for part in name.split(" ") if part)
            if all(_lower_alnum(f) for f in sub_fields):
                return ArgDesc(name, sub_fields, ArgFormat.LIST)
    if desc.startswith("[") and desc.endswith("]") and _lower_alnum(desc[1:-1]):
        return ArgDesc(desc[1:-1], (), ArgFormat.OPT)
    return None


def _parse_arg_descs(descs: tuple[str, ...]) -> tuple[ArgDesc, ...] | None:
    parsed = [_parse_arg_desc(d) for d in descs]
    if any(p is None for p in parsed):
        return None
    return tuple(p for p in parsed if p is not None)


@dataclass(frozen=True)
class Command:
    name: str
    # None: the arguments have no shape Pixie can format (they go out as a JSON array).
    args: tuple[ArgDesc, ...] | None


def _build_commands() -> dict[str, Command]:
    commands: dict[str, Command] = {}
    for name, descs in PIXIE_COMMANDS:
        # Pixie leaves a command without arguments described (cmd_arg_descs_ unset): a JSON array.
        commands[name] = Command(name, _parse_arg_descs(descs) if descs else None)
    for name in REDIS7_COMMANDS:
        commands.setdefault(name, Command(name, None))
    return commands


COMMANDS: dict[str, Command] = _build_commands()
# Upper-cased first words of every command name: inference's "is this a command" test.
COMMAND_WORDS: frozenset[str] = frozenset(name.split(" ")[0] for name in COMMANDS)


def lookup(words: list[str]) -> tuple[Command | None, int]:
    """The command that ``words`` (a request's array) starts with and how many words name it
    (two-word names first, as Pixie's GetCmdAndArgs), or (None, 0)."""
    if len(words) >= 2:
        cmd = COMMANDS.get(f"{words[0]} {words[1]}".upper())
        if cmd is not None:
            return cmd, 2
    if words:
        cmd = COMMANDS.get(words[0].upper())
        if cmd is not None:
            return cmd, 1
    return None, 0


# A JSON string as Pixie's rapidjson writer makes it (UTF-8 kept): json.dumps(text,
# ensure_ascii=False) without its per-call overhead (the C encoder json.dumps itself calls).
json_string: Callable[[str], str] = json.encoder.encode_basestring


def json_array(values: list[str]) -> str:
    return "[" + ",".join(map(json_string, values)) + "]"


class _Unformattable(Exception):
    """The values do not fit the command's argument shape (Pixie: a non-OK status)."""


class _Object:
    """A JSON object written key by key, as Pixie's JSONObjectBuilder (keys may repeat)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def kv(self, key: str, value: str) -> None:
        self.parts.append(json_string(key) + ":" + json_string(value))

    def kv_list(self, key: str, values: list[str]) -> None:
        self.parts.append(json_string(key) + ":" + json_array(values))

    def text(self) -> str:
        return "{" + ",".join(self.parts) + "}"


def _format_evalsha(args: list[str]) -> str:
    if len(args) < 4 or len(args) % 2:
        raise _Unformattable
    out = _Object()
    out.kv("sha1", args[0])
    out.kv("numkeys", args[1])
    rest = args[2:]
    half = len(rest) // 2
    # Pixie splits what follows numkeys in two halves whatever numkeys says.
    out.kv_list("key", rest[: len(rest) - half])
    out.kv_list("value", rest[half:])
    return out.text()


_EXPIRE_TOKENS = frozenset(("EX", "PX", "EXAT", "PXAT"))


def _format_set(args: list[str]) -> str:
    if len(args) < 2:
        raise _Unformattable
    out = _Object()
    out.kv("key", args[0])
    out.kv("value", args[1])
    opts, rest, i = [], args[2:], 0
    while i < len(rest):
        if rest[i].upper() in _EXPIRE_TOKENS:
            if i + 1 >= len(rest):
                raise _Unformattable
            opts.append(f"{rest[i]} {rest[i + 1]}")
            i += 2
        else:
            opts.append(rest[i])
            i += 1
    out.kv_list("options", opts)
    return out.text()


def _format_sscan(args: list[str]) -> str:
    if len(args) < 2:
        raise _Unformattable
    out = _Object()
    out.kv("key", args[0])
    out.kv("cursor", args[1])
    rest, i = args[2:], 0
    while i < len(rest):
        if i + 1 >= len(rest):
            raise _Unformattable
        token = rest[i].upper()
        if token == "MATCH":
            out.kv("pattern", rest[i + 1])
        elif token == "COUNT":
            out.kv("count", rest[i + 1])
        else:
            raise _Unformattable
        i += 2
    return out.text()


_SPECIAL = {"EVALSHA": _format_evalsha, "SET": _format_set, "SSCAN": _format_sscan}


def _format_by_descs(descs: tuple[ArgDesc, ...], args: list[str]) -> str:
    out = _Object()
    rest = list(args)
    for desc in descs:
        if desc.format is ArgFormat.FIXED:
            if not rest:
                raise _Unformattable
            out.kv(desc.name, rest.pop(0))
        elif desc.format is ArgFormat.LIST:
            if not rest:
                raise _Unformattable
            if len(desc.sub_fields) == 1:
                out.kv_list(desc.name, rest)
            elif len(rest) % len(desc.sub_fields) == 0:
                # Pixie's WriteRepeatedKVs: one single-key object per value, the keys in turn.
                objects = [
                    "{" + json_string(desc.sub_fields[i % len(desc.sub_fields)]) + ":" + json_string(v) + "}"
                    for i, v in enumerate(rest)
                ]
                out.parts.append(json_string(desc.name) + ":[" + ",".join(objects) + "]")
            else:
                raise _Unformattable
            rest = []
        elif rest:  # OPT
            out.kv(desc.name, rest.pop(0))
    # Values left over are dropped, as Pixie's FmtArgs drops them.
    return out.text()


def format_args(cmd: Command, args: list[str]) -> str:
    """``req_args`` for a known command's arguments (its name's words removed)."""
    special = _SPECIAL.get(cmd.name)
    if special is not None:
        try:
            return special(args)
        except _Unformattable:
            pass
    if cmd.args is None:
        return json_array(args)
    try:
        return _format_by_descs(cmd.args, args)
    except _Unformattable:
        return json_array(args)


# -- secrets --------------------------------------------------------------------------------------
# CONFIG SET parameters whose values are credentials.
_SECRET_CONFIG = frozenset(("REQUIREPASS", "MASTERAUTH", "MASTERUSER"))


def redact(name: str, args: list[str]) -> list[str]:
    """``args`` of command ``name`` with every credential replaced by SECRET_MARKER: AUTH's
    username and password, HELLO's ``AUTH username password``, MIGRATE's ``AUTH password`` and
    ``AUTH2 username password``, CONFIG SET of requirepass/masterauth/masteruser, and the password
    rules of ACL SETUSER (``>pass``, ``<pass``, ``#hash``, ``!hash``)."""
    if name == "AUTH":
        return [SECRET_MARKER] * len(args)
    if name in ("HELLO", "MIGRATE"):
        out = list(args)
        i = 0
        while i < len(out):
            token = out[i].upper()
            n = 2 if token in ("AUTH2",) or (token == "AUTH" and name == "HELLO") else 1 if token == "AUTH" else 0
            for j in range(i + 1, min(i + 1 + n, len(out))):
                out[j] = SECRET_MARKER
            i += 1 + n
        return out
    if name == "CONFIG SET":
        out = list(args)
        for i in range(0, len(out) - 1, 2):
            if out[i].upper() in _SECRET_CONFIG:
                out[i + 1] = SECRET_MARKER
        return out
    if name == "ACL SETUSER":
        return [a if a[:1] not in (">", "<", "#", "!") else a[0] + SECRET_MARKER for a in args]
    return args
