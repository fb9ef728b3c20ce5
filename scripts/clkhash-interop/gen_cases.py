#!/usr/bin/env python3
"""Random linkage schemas and records, encoded by clkhash 0.18.3: the expected side of the
clkhash interop test (see run.sh).

    gen_cases.py OUTDIR [--seed N] [--schemas N] [--records N]
        Writes OUTDIR/case-NN/{schema.json, secret.txt, records.csv, expected.json} and
        OUTDIR/cases.json (one line of description per case).
    gen_cases.py --fixture FILE [--seed N] [--schemas N] [--records N]
        Writes the same cases as one JSON file, for the Rust test that checks the encoder
        against clkhash without Python (crates/ttp-encode/tests/data/clkhash-cases.json).

Everything is synthetic and derived from the seed: the same seed gives the same cases. The
first eight schemas are planned so that together they cover both hash modes (and a mix of
them in one schema), 0-2 XOR folds, HKDF with and without salt and info, SHA256 and SHA512,
several key sizes, filter lengths that are not powers of two or multiples of 8, n = 1..3,
positional n-grams, exact and numeric comparisons, bitsPerToken and bitsPerFeature, ignored
features (bare and with a definition), missing-value sentinels, string patterns, case rules,
ascii encoding, dates in several formats, integers written as Python's int() accepts them,
and enums. Records mix ASCII with umlauts, accents, CJK and emoji, and include empty values,
sentinels, commas and quotes (to exercise CSV quoting).

Records are generated to be valid for their schema; clkhash validates them while encoding
(validate=True, its default), so a generator mistake fails loudly here rather than later.
"""
import argparse
import base64
import csv
import io
import json
import os
import random
import sys
from datetime import date, timedelta

import clkhash
from clkhash import clk
from clkhash import schema as clk_schema
from clkhash.serialization import serialize_bitarray

ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ASCII_LOWER = ASCII_UPPER.lower()
# Upper-case letters whose str.upper() is themselves (no ß: "ß".upper() == "SS").
EXTRA_UPPER = "ÄÖÜÉÈÇÑØÅŁ"
EXTRA_LOWER = "äöüßéèçñøåł"
EXOTIC = ["李", "王", "张", "😀", "🎉", "\u0301", "ẞ"]
PUNCT = " -'.,\""
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
FULL_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December"]


def b64(raw):
    return base64.b64encode(raw).decode()


class Gen:
    """Builds one schema and a value generator per feature."""

    def __init__(self, rng):
        self.rng = rng

    # ------------------------------------------------------------------ hashing settings
    def hash_obj(self, mode):
        r = self.rng
        if mode == "blake":
            return r.choice([None, {"type": "blakeHash"}])
        h = {"type": "doubleHash"}
        choice = r.random()
        if choice < 0.4:
            h["prevent_singularity"] = True
        elif choice < 0.7:
            h["prevent_singularity"] = False
        return h

    def strategy(self, long_tokens=False):
        r = self.rng
        if r.random() < 0.5:
            return {"bitsPerToken": r.choice([1, 5, 15, 20, 32, 33, 40] if not long_tokens else [10, 30])}
        return {"bitsPerFeature": r.choice([3, 50, 100, 200, 300])}

    def hashing(self, comparison, mode, missing=None, long_tokens=False):
        h = {"comparison": comparison, "strategy": self.strategy(long_tokens)}
        hash_obj = self.hash_obj(mode)
        if hash_obj is not None:
            h["hash"] = hash_obj
        if missing is not None:
            h["missingValue"] = missing
        return h

    def ngram(self, ns=(1, 2, 3)):
        c = {"type": "ngram", "n": self.rng.choice(list(ns))}
        p = self.rng.random()
        if p < 0.35:
            c["positional"] = True
        elif p < 0.6:
            c["positional"] = False
        return c

    # ------------------------------------------------------------------ feature kinds
    def name(self, ident, mode):
        r = self.rng
        case = r.choice(["upper", "lower", "mixed", None])
        ascii_only = r.random() < 0.2
        fmt = {"type": "string"}
        fmt["encoding"] = "ascii" if ascii_only else r.choice(["utf-8", "utf-8", None])
        if fmt["encoding"] is None:
            del fmt["encoding"]
        if case:
            fmt["case"] = case
        min_len = r.choice([None, 0, 1, 2])
        max_len = r.choice([None, 12, 30])
        if min_len is not None:
            fmt["minLength"] = min_len
        if max_len is not None:
            fmt["maxLength"] = max_len
        missing = None
        if r.random() < 0.4:
            missing = {"sentinel": r.choice(["", "NA", "unbekannt"])}
            if r.random() < 0.6:
                repl = r.choice(["", "?", "Ünbekannt", "N/A"])
                if ascii_only and not repl.isascii():
                    repl = "N/A"
                missing["replaceWith"] = repl
        cmp = r.choice([self.ngram(), self.ngram((2,)), {"type": "exact"}])
        feature = {"identifier": ident, "format": fmt, "hashing": self.hashing(cmp, mode, missing)}

        def value(rng):
            if missing is not None and rng.random() < 0.1:
                return missing["sentinel"]
            for _ in range(1000):
                n = rng.randint(0, 14)
                pool = ASCII_UPPER + ASCII_LOWER + PUNCT
                if not ascii_only:
                    pool += EXTRA_UPPER + EXTRA_LOWER
                chars = [rng.choice(pool) for _ in range(n)]
                if not ascii_only and rng.random() < 0.3:
                    chars.insert(rng.randint(0, len(chars)), rng.choice(EXOTIC))
                s = "".join(chars)
                if case == "upper":
                    s = s.upper()
                    if s.upper() != s:
                        continue
                elif case == "lower":
                    s = s.lower()
                    if s.lower() != s:
                        continue
                if min_len is not None and len(s) < min_len:
                    continue
                if max_len is not None and len(s) > max_len:
                    continue
                if ascii_only and not s.isascii():
                    continue
                if missing is not None and s == missing["sentinel"]:
                    continue
                return s
            raise RuntimeError("could not generate a valid string")
        return feature, value

    def pattern(self, ident, mode):
        r = self.rng
        pattern, make = r.choice([
            ("[0-9]{5}", lambda g: "".join(g.choice("0123456789") for _ in range(5))),
            ("[A-Z]{1,3}-?[0-9]{2,4}", lambda g: "".join(g.choice(ASCII_UPPER) for _ in range(g.randint(1, 3)))
             + g.choice(["", "-"]) + "".join(g.choice("0123456789") for _ in range(g.randint(2, 4)))),
            ("(?:[a-zäöü]+ )*[a-zäöü]+", lambda g: " ".join(
                "".join(g.choice("abcdefäöü") for _ in range(g.randint(1, 6))) for _ in range(g.randint(1, 3)))),
        ])
        fmt = {"type": "string", "pattern": pattern}
        if r.random() < 0.5:
            fmt["description"] = "synthetic pattern field"
        cmp = r.choice([{"type": "ngram", "n": 2, "positional": True}, self.ngram(), {"type": "exact"}])
        return {"identifier": ident, "format": fmt, "hashing": self.hashing(cmp, mode)}, make

    def date(self, ident, mode):
        r = self.rng
        spec = r.choice(["%Y-%m-%d", "%d.%m.%Y", "%Y%m%d", "%d %b %Y", "%m/%d/%y", "%d %B %Y"])
        missing = {"sentinel": ""} if r.random() < 0.5 else None
        if missing is not None and r.random() < 0.5:
            missing["replaceWith"] = r.choice(["", "00000000", "unknown"])
        cmp = r.choice([
            {"type": "ngram", "n": 1, "positional": True},
            {"type": "ngram", "n": 2},
            {"type": "exact"},
        ])
        feature = {"identifier": ident, "format": {"type": "date", "format": spec},
                   "hashing": self.hashing(cmp, mode, missing)}

        def value(rng):
            if missing is not None and rng.random() < 0.1:
                return missing["sentinel"]
            if spec == "%m/%d/%y":
                d = date(1969, 1, 1) + timedelta(days=rng.randint(0, 36000))
            else:
                d = date(1900, 1, 1) + timedelta(days=rng.randint(0, 47000))
            if spec == "%Y-%m-%d":
                # strptime also accepts unpadded months and days.
                if rng.random() < 0.2:
                    return f"{d.year}-{d.month}-{d.day}"
                return d.strftime(spec)
            if spec == "%d %b %Y":
                month = MONTHS[d.month - 1]
                month = rng.choice([month, month.upper(), month.lower()])
                return f"{d.day:02d} {month} {d.year}"
            if spec == "%d %B %Y":
                return f"{d.day} {FULL_MONTHS[d.month - 1]} {d.year}"
            return d.strftime(spec)
        return feature, value

    def integer(self, ident, mode):
        r = self.rng
        lo, hi = r.choice([(None, None), (0, 130), (-50, 50), (1, None)])
        fmt = {"type": "integer"}
        if lo is not None:
            fmt["minimum"] = lo
        if hi is not None:
            fmt["maximum"] = hi
        cmp = r.choice([
            {"type": "numeric", "thresholdDistance": r.choice([1, 2, 5, 8]), "resolution": r.randint(1, 4)},
            {"type": "numeric", "thresholdDistance": r.choice([2.5, 0.5]), "resolution": r.randint(1, 3),
             "fractional_precision": r.choice([1, 2])},
            {"type": "exact"},
            self.ngram((1, 2)),
        ])
        missing = {"sentinel": "", "replaceWith": ""} if r.random() < 0.3 else None
        feature = {"identifier": ident, "format": fmt, "hashing": self.hashing(cmp, mode, missing, long_tokens=True)}

        def value(rng):
            if missing is not None and rng.random() < 0.1:
                return ""
            v = rng.randint(lo if lo is not None else -10_000, hi if hi is not None else 10_000)
            text = str(v)
            style = rng.random()
            if style < 0.1:
                text = f" {text} "
            elif style < 0.2 and v >= 0:
                text = "+" + text
            elif style < 0.3 and v >= 0:
                text = "00" + text
            elif style < 0.4 and abs(v) >= 100:
                sign, digits = ("-", text[1:]) if v < 0 else ("", text)
                text = sign + digits[0] + "_" + digits[1:]
            return text
        return feature, value

    def decimal(self, ident, mode):
        """A free-text field holding decimal numbers, compared numerically (float path)."""
        r = self.rng
        fp = r.choice([0, 1, 2])
        cmp = {"type": "numeric", "thresholdDistance": r.choice([0.5, 1.5, 3, 10]), "resolution": r.randint(1, 3)}
        if fp:
            cmp["fractional_precision"] = fp
        if fp == 0 and cmp["thresholdDistance"] < 1:
            cmp["thresholdDistance"] = 2
        fmt = {"type": "string", "pattern": r"-?[0-9]+(\.[0-9]+)?"}
        feature = {"identifier": ident, "format": fmt, "hashing": self.hashing(cmp, mode, long_tokens=True)}

        def value(rng):
            v = rng.uniform(-300, 300)
            return f"{v:.{rng.randint(0, 3)}f}"
        return feature, value

    def enum(self, ident, mode):
        r = self.rng
        values = r.choice([["F", "M", "X", "U"], ["ja", "nein", "unbekannt"], ["männlich", "weiblich", "divers"]])
        cmp = r.choice([{"type": "exact"}, {"type": "exact"}, self.ngram((1, 2))])
        feature = {"identifier": ident, "format": {"type": "enum", "values": values},
                   "hashing": self.hashing(cmp, mode)}
        return feature, lambda rng: rng.choice(values)

    def ignored(self, ident, mode):
        r = self.rng
        if r.random() < 0.5:
            feature = {"identifier": ident, "ignored": True}
        else:
            # A full definition that is switched off: clkhash must ignore it, format included.
            feature = {"identifier": ident, "ignored": True, "format": {"type": "integer"},
                       "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 7}}}
        return feature, lambda rng: rng.choice(["", "id-" + str(rng.randint(0, 99999)), "nicht, validiert", "李"])


KINDS = ["name", "pattern", "date", "integer", "decimal", "enum", "ignored"]

# hash mode, folds, salt, info, kdf hash, keySize, l (None: chosen from the mode)
PLANS = [
    ("blake", 0, True, True, "SHA256", 64, 1024),
    ("double", 1, False, False, "SHA512", 32, 1000),
    ("blake", 2, True, False, "SHA512", None, 256),
    ("double", 0, False, True, "SHA256", 128, 777),
    ("mixed", 1, True, True, None, 16, 512),
    ("blake", 1, False, False, "SHA256", 64, 2048),
    ("double", 2, True, False, "SHA256", 64, 999),
    ("blake", 0, False, True, "SHA512", 48, 128),
]


def make_case(rng, index, records):
    if index < len(PLANS):
        mode, folds, salt, info, kdf_hash, key_size, l = PLANS[index]
    else:
        mode = rng.choice(["blake", "double", "mixed"])
        folds = rng.randint(0, 2)
        salt, info = rng.random() < 0.5, rng.random() < 0.5
        kdf_hash = rng.choice(["SHA256", "SHA512", None])
        key_size = rng.choice([None, 16, 32, 64] + ([100] if mode == "double" else []))
        l = rng.choice([256, 512, 1024]) if mode != "double" else rng.choice([500, 1024, 1001])
    g = Gen(rng)
    kinds = ["name", "date", KINDS[index % len(KINDS)]] + rng.sample(KINDS, rng.randint(1, 3))
    rng.shuffle(kinds)
    features, makers = [], []
    for i, kind in enumerate(kinds):
        feature_mode = rng.choice(["blake", "double"]) if mode == "mixed" else mode
        feature, maker = getattr(g, kind)(f"{kind}_{i}", feature_mode)
        features.append(feature)
        makers.append(maker)
    kdf = {"type": "HKDF"}
    if kdf_hash:
        kdf["hash"] = kdf_hash
    if salt:
        kdf["salt"] = b64(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    if info:
        kdf["info"] = b64(("interop-" + str(index)).encode())
    if key_size:
        kdf["keySize"] = key_size
    config = {"l": l, "kdf": kdf}
    if folds or rng.random() < 0.5:
        config["xor_folds"] = folds
    schema = {"version": 3, "clkConfig": config, "features": features}
    secret = "interop-secret-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789äß") for _ in range(20))
    header = [f["identifier"] for f in features]
    rows = [[make(rng) for make in makers] for _ in range(records)]
    description = (f"{mode} hash, l={l}, xor_folds={folds}, kdf={kdf_hash or 'SHA256 (default)'}"
                   f"{' +salt' if salt else ''}{' +info' if info else ''}, keySize={key_size or '64 (default)'}, "
                   f"features: {', '.join(header)}")
    return schema, secret, header, rows, description


def encode_with_clkhash(schema, secret, header, rows):
    """clkhash's own CSV path, validation on, exactly as its CLI does."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    csv_text = buf.getvalue()
    parsed = clk_schema.from_json_dict(json.loads(json.dumps(schema)))
    clks = clk.generate_clk_from_csv(io.StringIO(csv_text, newline=""), secret, parsed, validate=True,
                                     header=True, progress_bar=False, max_workers=1)
    return csv_text, [serialize_bitarray(c) for c in clks]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", nargs="?")
    parser.add_argument("--fixture", help="write all cases into this one JSON file instead")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--schemas", type=int, default=10)
    parser.add_argument("--records", type=int, default=40)
    args = parser.parse_args()
    if (args.outdir is None) == (args.fixture is None):
        parser.error("give either OUTDIR or --fixture FILE")
    if args.schemas < len(PLANS):
        parser.error(f"--schemas must be at least {len(PLANS)} (the planned coverage)")
    rng = random.Random(args.seed)
    cases = []
    for index in range(args.schemas):
        schema, secret, header, rows, description = make_case(rng, index, args.records)
        csv_text, clks = encode_with_clkhash(schema, secret, header, rows)
        cases.append({"name": f"case-{index:02d}", "description": description, "schema": schema,
                      "secret": secret, "header": header, "records": rows, "csv": csv_text, "clks": clks})
    if args.fixture:
        fixture = {"generator": "scripts/clkhash-interop/gen_cases.py", "seed": args.seed,
                   "clkhash_version": clkhash.__version__,
                   "cases": [{k: c[k] for k in ("name", "description", "schema", "secret", "header", "records", "clks")}
                             for c in cases]}
        with open(args.fixture, "w", encoding="utf-8") as fh:
            json.dump(fixture, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
    else:
        os.makedirs(args.outdir, exist_ok=True)
        for c in cases:
            d = os.path.join(args.outdir, c["name"])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "schema.json"), "w", encoding="utf-8") as fh:
                json.dump(c["schema"], fh, ensure_ascii=False, indent=2)
            with open(os.path.join(d, "secret.txt"), "w", encoding="utf-8") as fh:
                fh.write(c["secret"])  # no trailing newline: the secret is exactly these bytes
            with open(os.path.join(d, "records.csv"), "w", encoding="utf-8", newline="") as fh:
                fh.write(c["csv"])
            with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as fh:
                json.dump({"clks": c["clks"]}, fh)
        with open(os.path.join(args.outdir, "cases.json"), "w", encoding="utf-8") as fh:
            json.dump({c["name"]: c["description"] for c in cases}, fh, ensure_ascii=False, indent=1)
    total = sum(len(c["clks"]) for c in cases)
    print(f"gen_cases: clkhash {clkhash.__version__} encoded {total} records for {len(cases)} schemas "
          f"(seed {args.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()
