#!/usr/bin/env python3
"""Compare ttp-agent's CLKs with clkhash's, bit for bit (see run.sh).

    compare.py CASEDIR

For every CASEDIR/case-*/: expected.json (clkhash) against actual.json (ttp-agent encode; a
missing or unreadable file fails every record of the case). Prints one line per differing
record (case, schema description, record number, number of differing bits), then exactly
`clkhash-interop: N passed, M failed` (N and M count records). Exit status 1 if any failed.
Only the standard library is used.
"""
import base64
import json
import os
import sys


def load_clks(path):
    with open(path, encoding="utf-8") as fh:
        clks = json.load(fh)["clks"]
    return [base64.b64decode(c, validate=True) for c in clks]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    with open(os.path.join(root, "cases.json"), encoding="utf-8") as fh:
        descriptions = json.load(fh)
    passed = failed = 0
    for name in sorted(descriptions):
        case = os.path.join(root, name)
        expected = load_clks(os.path.join(case, "expected.json"))
        try:
            actual = load_clks(os.path.join(case, "actual.json"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"{name} ({descriptions[name]}): no usable output from ttp-agent ({e}); "
                  f"all {len(expected)} records fail")
            failed += len(expected)
            continue
        if len(actual) != len(expected):
            print(f"{name} ({descriptions[name]}): ttp-agent produced {len(actual)} CLKs for "
                  f"{len(expected)} records")
        case_failed = 0
        for i, want in enumerate(expected):
            got = actual[i] if i < len(actual) else None
            if got == want:
                passed += 1
                continue
            failed += 1
            case_failed += 1
            if got is None:
                detail = "missing"
            elif len(got) != len(want):
                detail = f"{len(got)} bytes instead of {len(want)}"
            else:
                bits = sum(bin(a ^ b).count("1") for a, b in zip(got, want))
                detail = f"{bits} of {8 * len(want)} bits differ"
            if case_failed <= 10:
                print(f"{name} ({descriptions[name]}) record {i + 1}: {detail}")
        if case_failed > 10:
            print(f"{name}: {case_failed - 10} more differing records")
    print(f"clkhash-interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
