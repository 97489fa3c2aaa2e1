#!/usr/bin/env python3
"""Regenerate postdesk's test mail corpus (standard library only; run from anywhere).

Writes tests/fixtures/NNN-name.eml + NNN-name.expect.json (numbered in the order below) and the
demo samples in examples/mail/, then re-reads everything with Python's email package as a
self-check (see scripts/fixtures/verify.py). Output is byte-for-byte reproducible.
"""

import importlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import common, verify  # noqa: E402

# Fixture modules, in numbering order. Each has fixtures() -> list[common.Fx].
MODULES = ["charsets_ja", "charsets_ko", "charsets_zh", "charsets_misc", "clients", "attachments",
           "forward", "broken", "missing", "auto", "replies", "signatures", "fidelity"]
GENERATED = re.compile(r"^\d{3}-.+\.(eml|expect\.json)$")


def check_bytes(name, data):
    assert b"\n" not in data.replace(b"\r\n", b""), "%s: bare LF" % name
    assert b"\r" not in data.replace(b"\r\n", b""), "%s: bare CR" % name
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, "%s: line longer than 998 octets" % name


def main():
    fixtures = []
    for name in MODULES:
        try:
            module = importlib.import_module("fixtures." + name)
        except ModuleNotFoundError as e:
            if e.name != "fixtures." + name:
                raise
            print("skipping missing module fixtures/%s.py" % name)
            continue
        fixtures.extend(module.fixtures())
    names = [fx.name for fx in fixtures]
    assert len(names) == len(set(names)), "duplicate fixture names"

    common.FIXTURES.mkdir(parents=True, exist_ok=True)
    for old in common.FIXTURES.iterdir():
        if GENERATED.match(old.name):
            old.unlink()
    written = []
    for n, fx in enumerate(fixtures, 1):
        stem = "%03d-%s" % (n, fx.name)
        check_bytes(stem, fx.eml)
        (common.FIXTURES / (stem + ".eml")).write_bytes(fx.eml)
        text = json.dumps(fx.expect, ensure_ascii=False, indent=2) + "\n"
        (common.FIXTURES / (stem + ".expect.json")).write_text(text, encoding="utf-8")
        written.append((stem, fx))
    print("wrote %d fixtures to %s" % (len(written), common.FIXTURES))

    samples = []
    try:
        demo = importlib.import_module("fixtures.demo")
    except ModuleNotFoundError as e:
        if e.name != "fixtures.demo":
            raise
        print("skipping missing module fixtures/demo.py")
    else:
        common.EXAMPLES.mkdir(parents=True, exist_ok=True)
        for old in common.EXAMPLES.glob("*.eml"):
            old.unlink()
        for filename, data in demo.samples():
            check_bytes(filename, data)
            (common.EXAMPLES / filename).write_bytes(data)
            samples.append((filename, data))
        print("wrote %d demo mails to %s" % (len(samples), common.EXAMPLES))

    problems = verify.run(written, samples)
    for p in problems:
        print("CHECK FAILED:", p)
    if problems:
        sys.exit(1)
    print("self-check passed")


if __name__ == "__main__":
    main()
