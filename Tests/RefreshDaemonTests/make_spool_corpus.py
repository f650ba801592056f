#!/usr/bin/env python3
"""Writes the garbage corpus for the spool intake test: SpoolCorpus/<name> plus SpoolCorpus.tsv,
which maps each file to a piece of the reason it must be rejected with. Run from this folder;
the output is committed. (Files that cannot live in git - a 10 MiB file, a symlink, a FIFO, a
directory - are made by the test itself.)"""
import json, os, random

random.seed(20261125)
OUT = "SpoolCorpus"
os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    os.remove(os.path.join(OUT, f))
U = "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01"
base = {"segment_id": U, "user_time_zone": "America/Chicago"}
cases = []

def add(name, content, reason):
    data = content if isinstance(content, bytes) else content.encode()
    cases.append((name, data, reason))

def obj(**kw):
    d = dict(base); d.update(kw)
    for k, v in list(d.items()):
        if v is DEL: del d[k]
    return json.dumps(d)

DEL = object()
# Truncated JSON at many points.
full = obj(account="default", id="crm-1", priority=3, not_before="2026-11-25T06:00:00Z", note="x")
for i, cut in enumerate([1, 5, 17, 30, 45, 60, 80, 100, len(full) - 1]):
    add(f"truncated-{i:02}.json", full[:cut], "not valid JSON")
add("empty.json", "", "the file is empty")
add("whitespace.json", "   \n\t ", "the JSON ends too early")
# Not an object.
for i, v in enumerate(["[]", "42", '"text"', "null", "true", "[{\"segment_id\":\"%s\"}]" % U]):
    add(f"not-object-{i}.json", v, "must be a JSON object")
# Wrong types.
for field, value, reason in [
    ("segment_id", 123, "segment_id: must be a string"), ("segment_id", None, "segment_id: must be a string"),
    ("segment_id", [U], "segment_id: must be a string"), ("user_time_zone", 5, "user_time_zone: must be a string"),
    ("user_time_zone", {"name": "UTC"}, "user_time_zone: must be a string"), ("account", 1, "account: must be a string"),
    ("id", 7, "id: must be a string"), ("priority", "1", "priority: must be an integer"), ("priority", 1.5, "priority: must be an integer"),
    ("priority", True, "priority: must be an integer"), ("priority", None, "priority: must be an integer"),
    ("not_before", 1764050400, "not_before: must be a string"), ("expires_at", False, "expires_at: must be a string"),
    ("note", 3, "note: must be a string"), ("note", ["a"], "note: must be a string"),
]:
    add(f"type-{field}-{type(value).__name__}.json", obj(**{field: value}), reason)
# Huge numbers.
for i, n in enumerate(["1e400", "99999999999999999999999999", "-1e309", "1" * 80, "101", "-101", "9223372036854775808"]):
    text = '{"segment_id":"%s","user_time_zone":"UTC","priority":%s}' % (U, n)
    add(f"huge-number-{i}.json", text, "priority:" if len(n) <= 64 else "longer than 64 characters")
# Invalid UTF-8 and NUL bytes.
add("invalid-utf8-1.json", b'{"segment_id":"' + U.encode() + b'","user_time_zone":"\xc3\x28"}', "not valid UTF-8")
add("invalid-utf8-2.json", b'\xff\xfe{"segment_id":"' + U.encode() + b'"}', "not valid UTF-8")
add("invalid-utf8-3.json", b'{"segment_id":"' + U.encode() + b'","note":"\xed\xa0\x80","user_time_zone":"UTC"}', "not valid UTF-8")
add("invalid-utf8-4.json", b'{"segment_id":"' + U.encode() + b'","note":"\xc0\xaf","user_time_zone":"UTC"}', "not valid UTF-8")
add("nul-1.json", b'{"segment_id":"' + U.encode() + b'\x00","user_time_zone":"UTC"}', "NUL byte")
add("nul-2.json", b'\x00{"segment_id":"' + U.encode() + b'","user_time_zone":"UTC"}', "NUL byte")
add("nul-3.json", b'{"segment_id":"' + U.encode() + b'","user_time_zone":"UTC"}\x00', "unexpected text after")
add("utf16.json", json.dumps(base).encode("utf-16"), "not valid UTF-8")
add("lone-surrogate.json", '{"segment_id":"%s","user_time_zone":"UTC","note":"\\ud800"}' % U, "lone UTF-16 surrogate")
# Deep nesting.
for i, depth in enumerate([20, 100, 10000]):
    add(f"deep-{i}.json", '{"note":' + "[" * depth + "]" * depth + "}", "nesting is deeper")
# Bad UUIDs.
for i, u in enumerate(["", "not-a-uuid", U[:-1], U + "0", U.replace("-", ""), "0f8c5e8e_1111_4f4a_9a53_3c3f0d7e1a01",
                       "gf8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "{" + U[1:-1] + "}", " " + U[1:], "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a0\u00e9"]):
    add(f"bad-uuid-{i:02}.json", obj(segment_id=u), "segment_id:")
# Bad zones.
for i, z in enumerate(["", "PST", "BST", "GMT+5", "america/chicago", "../../etc/passwd", "posix/Europe/Paris", "A" * 200,
                       "America/Chicago ", "Mars/Olympus_Mons", "UTC\n", "/usr/share/zoneinfo/UTC", "Europe/Pariss"]):
    add(f"bad-zone-{i:02}.json", obj(user_time_zone=z), "user_time_zone: unknown time zone")
# Unknown accounts.
for i, a in enumerate(["nope", "", "Default", "default "]):
    add(f"bad-account-{i}.json", obj(account=a), "account:")
# Duplicate keys.
add("duplicate-segment.json", '{"segment_id":"%s","segment_id":"%s","user_time_zone":"UTC"}' % (U, U), "duplicate key \"segment_id\"")
add("duplicate-zone.json", '{"segment_id":"%s","user_time_zone":"UTC","user_time_zone":"UTC"}' % U, "duplicate key \"user_time_zone\"")
add("duplicate-priority.json", '{"segment_id":"%s","user_time_zone":"UTC","priority":1,"priority":2}' % U, "duplicate key \"priority\"")
# Unknown fields and other bad values.
for i, extra in enumerate(["colour", "segmentId", "user_timezone", "Segment_id", "job"]):
    add(f"unknown-field-{i}.json", obj(**{extra: "x"}), "unknown field")
add("missing-segment.json", obj(segment_id=DEL), "segment_id: is required")
add("missing-zone.json", obj(user_time_zone=DEL), "user_time_zone: is required")
add("bad-id-space.json", obj(id="has space"), "id: must be 1 to 128")
add("bad-id-long.json", obj(id="a" * 129), "id: must be 1 to 128")
add("bad-id-empty.json", obj(id=""), "id: must be 1 to 128")
add("bad-id-slash.json", obj(id="a/b"), "id: must be 1 to 128")
add("bad-not-before.json", obj(not_before="tomorrow"), "not_before:")
add("bad-not-before-noz.json", obj(not_before="2026-11-25T06:00:00"), "not_before:")
add("bad-expires.json", obj(expires_at="2026-13-01T00:00:00Z"), "expires_at:")
add("expires-before.json", obj(not_before="2026-11-26T00:00:00Z", expires_at="2026-11-25T00:00:00Z"), "expires_at: is not after not_before")
add("note-too-long.json", obj(note="n" * 1025), "note: is 1025 bytes")
add("trailing-garbage.json", obj() + " junk", "unexpected text after")
add("two-objects.json", obj() + obj(), "unexpected text after")
add("single-quotes.json", "{'segment_id':'%s','user_time_zone':'UTC'}" % U, "expected a quoted key")
add("trailing-comma.json", '{"segment_id":"%s","user_time_zone":"UTC",}' % U, "expected a quoted key")
add("comment.json", '// job\n' + obj(), "unexpected character")
add("leading-zero.json", '{"segment_id":"%s","user_time_zone":"UTC","priority":01}' % U, "leading zeros")
add("control-char.json", '{"segment_id":"%s","user_time_zone":"UTC","note":"a\tb"}' % U, "control character")
add("bad-escape.json", '{"segment_id":"%s","user_time_zone":"UTC","note":"\\x41"}' % U, "invalid escape")
add("yaml.json", "segment_id: %s\nuser_time_zone: UTC\n" % U, "unexpected character")
add("binary.json", bytes(random.getrandbits(8) for _ in range(512)), "not valid")
add("big-note-array.json", '{"segment_id":"%s","user_time_zone":"UTC","note":[' % U + ",".join(["1"] * 5000) + "]}", "note: must be a string")
assert len(cases) >= 100, len(cases)
with open("SpoolCorpus.tsv", "w") as f:
    for name, data, reason in cases:
        with open(os.path.join(OUT, name), "wb") as g:
            g.write(data)
        f.write(f"{name}\t{reason}\n")
print(len(cases), "files")
