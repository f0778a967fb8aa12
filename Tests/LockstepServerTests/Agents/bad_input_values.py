"""Hostile values for bad_input.py, per kind of field.

Each is (case name, JSON value or RAW(json text), gRPC value or WIRE(bytes) or None (no gRPC form),
expectation). Expectations: "error" (must be a coded error), "any" (a coded error or a normal answer:
the value is in range), "park" (also a poll left waiting: in range, capped).
"""
import random

BODY_MAX = 1 << 20                       # docs/api.md, Limits: requestBodyBytesMax
BIG_ID = "a" * (900 * 1024)              # a 900 KB identifier (under the body limit)
LONG_ID = "a" * 129                      # one byte over the 128-byte identifier limit
LONG_TEXT = "r" * 1025                   # one byte over the documented 1,024-byte maxLength of free text
HUGE_TEXT = "r" * (900 * 1024)
BAD_IDS = [("space", "has space"), ("slash", "a/b"), ("nul", "a\x00b"), ("newline", "a\nb"), ("unicode", "caf\u00e9"),
           ("emoji", "x\U0001F600"), ("dotdot", "../../etc/passwd"), ("percent", "a%2Fb"), ("quote", 'a"b'),
           ("del", "a\x7fb"), ("empty", "")]
rng = random.Random(20240601)
RANDOM_BYTES = bytes(rng.randrange(256) for _ in range(256))


class RAW:        # JSON text spliced in as the value
    def __init__(self, text):
        self.text = text


class WIRE:       # the field's bytes on the wire, spliced into an otherwise benign message
    def __init__(self, data):
        self.data = data


def varint(n):
    n &= (1 << 70) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number, wire_type):
    return varint((number << 3) | wire_type)


def ident_values():
    values = [("900KB", BIG_ID, BIG_ID, "error"), ("129-bytes", LONG_ID, LONG_ID, "error")]
    values += [(f"bad-chars-{name}", value, value, "error") for name, value in BAD_IDS if name != "empty"]
    values += [("lone-surrogate", RAW('"a\\ud800b"'), None, "error"),
               ("number-not-string", 12, None, "error"), ("bool-not-string", True, None, "error"),
               ("object-not-string", {}, None, "error"), ("array-not-string", ["a"], None, "error")]
    return values


def text_values():
    return [("1025-bytes", LONG_TEXT, LONG_TEXT, "error"), ("900KB", HUGE_TEXT, HUGE_TEXT, "error"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error"),
            ("array-not-string", ["x"], None, "error")]


def opaque_values():
    return [("900KB", BIG_ID, BIG_ID, "any"), ("bad-chars", "a b/\u00e9\x00", "a b/\u00e9\x00", "any"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error"),
            ("object-not-string", {}, None, "error")]


def stream_values():  # "migration/ID" or "plan/NAME" (docs/api.md, History); empty = every stream
    return [("900KB", BIG_ID, BIG_ID, "error"), ("no-kind", "bad-input", "bad-input", "error"),
            ("unknown-kind", "node/x", "node/x", "error"), ("migration-129-byte-id", "migration/" + LONG_ID, "migration/" + LONG_ID, "error"),
            ("plan-bad-chars", "plan/a b\u00e9\x00", "plan/a b\u00e9\x00", "error"), ("migration-empty-id", "migration/", "migration/", "error"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error")]


def key_values():  # the stage's cohort key: up to 256 bytes
    return [("257-bytes", "k" * 257, "k" * 257, "error"), ("900KB", BIG_ID, BIG_ID, "error"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error")]


def yaml_values(plan):
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
                                                   f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
                                                   for i in range(9))
    return [("garbage", "%%% not yaml {{{", "%%% not yaml {{{", "error"),
            ("billion-laughs", bomb, bomb, "error"),
            ("deep-nesting", "x: " + "[" * 50000 + "]" * 50000, "x: " + "[" * 50000 + "]" * 50000, "error"),
            ("900KB-scalar", "name: " + "a" * (900 * 1024), "name: " + "a" * (900 * 1024), "error"),
            ("nul-bytes", "name: a\x00b\n", "name: a\x00b\n", "error"),
            ("129-byte-node-id", plan.replace("expand-ledger-schema", LONG_ID), plan.replace("expand-ledger-schema", LONG_ID), "error"),
            ("bad-char-plan-name", plan.replace("name: ledger-split", "name: ledger split/\u00e9"),
             plan.replace("name: ledger-split", "name: ledger split/\u00e9"), "error"),
            ("lone-surrogate", RAW('"name: a\\ud800b"'), None, "error"),
            ("number-not-string", 12, None, "error")]


U32_OUT = [("-1", -1), ("2^32", 4294967296), ("2^63", 9223372036854775808), ("2^64", 18446744073709551616),
           ("-2^63", -9223372036854775808), ("fraction-1.5", 1.5), ("1e400", RAW("1e400")), ("string-abc", "abc"),
           ("empty-string", ""), ("object", {}), ("bool", True)]


def u32_values(expect_in_range):
    values = [(name, value, None, "error") for name, value in U32_OUT]
    values += [("quoted-2^32", "4294967296", None, "error"),
               ("max-2^32-1", 4294967295, 4294967295, expect_in_range),
               ("wire-varint-2^64-1", None, WIRE(varint((1 << 64) - 1)), expect_in_range),
               ("wire-varint-11-bytes", None, WIRE(b"\xff" * 10 + b"\x01"), "error")]
    return values


def u64_values(expect_in_range):
    return [("-1", "-1", None, "error"), ("-1-unquoted", -1, None, "error"),
            ("2^64", "18446744073709551616", None, "error"), ("2^64-unquoted", RAW("18446744073709551616"), None, "error"),
            ("-2^63", "-9223372036854775808", None, "error"), ("fraction-1.5", "1.5", None, "error"),
            ("1e400", RAW("1e400"), None, "error"), ("string-abc", "abc", None, "error"), ("object", {}, None, "error"),
            ("2^63", "9223372036854775808", 1 << 63, expect_in_range),
            ("max-2^64-1", "18446744073709551615", (1 << 64) - 1, expect_in_range),
            ("wire-varint-11-bytes", None, WIRE(b"\xff" * 10 + b"\x01"), "error")]


def i64_values(expect_in_range):
    return [("2^63", "9223372036854775808", None, "error"), ("-2^63-1", "-9223372036854775809", None, "error"),
            ("2^64", "18446744073709551616", None, "error"), ("2^64-unquoted", RAW("18446744073709551616"), None, "error"),
            ("fraction-1.5", "1.5", None, "error"), ("string-abc", "abc", None, "error"), ("object", {}, None, "error"),
            ("Int64.min", "-9223372036854775808", -(1 << 63), expect_in_range),
            ("Int64.max", "9223372036854775807", (1 << 63) - 1, expect_in_range),
            ("-1", "-1", -1, expect_in_range)]


def double_values():
    return [("NaN", "NaN", float("nan"), "error"), ("Infinity", "Infinity", float("inf"), "error"),
            ("-Infinity", "-Infinity", float("-inf"), "error"), ("1e308", 1e308, 1e308, "error"),
            ("1e400", RAW("1e400"), None, "error"), ("string-abc", "abc", None, "error"), ("object", {}, None, "error"),
            ("bool", True, None, "error")]


def bool_values():
    return [("string-yes", "yes", None, "error"), ("number-2", 2, None, "error"), ("object", {}, None, "error"),
            ("wire-varint-2", None, WIRE(varint(2)), "any"), ("wire-varint-2^64-1", None, WIRE(varint((1 << 64) - 1)), "any")]


def strs_values():
    many = ["x"] * 100000
    return [("not-an-array", "x", None, "error"), ("numbers", [1, 2], None, "error"), ("nested", [["x"]], None, "error"),
            ("100k-entries", many, many, "any"), ("one-900KB-entry", [BIG_ID], [BIG_ID], "any"),
            ("bad-chars-entry", ["a b\x00\u00e9"], ["a b\x00\u00e9"], "any")]


def values_for(route, name, kind, plan):
    """The hostile values for field `name` of `route`, of kind `kind`; `plan` is a valid plan's text."""
    if kind == "id":
        return ident_values()
    if kind == "text":
        return text_values()
    if kind == "opaque":
        return opaque_values()
    if kind == "key":
        return key_values()
    if kind == "stream":
        return stream_values()
    if kind == "yaml":
        values = yaml_values(plan)
        return [(n, j, g, "any" if route.method == "ValidatePlan" and isinstance(j, str) else e) for n, j, g, e in values]
    in_range = "park" if (route.method == "Poll" and name == "wait_ms") else "any"
    if kind == "u32":
        if name == "percent":  # 0...100: anything over it is out of range
            return [(n, j, g, "error") for n, j, g, _ in u32_values("error")] + [("101", 101, 101, "error")]
        return u32_values(in_range)
    if kind == "u64":
        return u64_values(in_range)
    if kind == "i64":
        return i64_values(in_range)
    if kind == "double":
        return double_values()
    if kind == "bool":
        return bool_values()
    if kind == "strs":
        return strs_values()
    raise ValueError(kind)
