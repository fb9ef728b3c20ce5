#!/usr/bin/env python3
"""clkhash 0.18.3 side of scripts/bench-clkhash-ratio.sh (run it through that script).

    python bench-clkhash-ratio.py gen   WORK N        write records-{names,unique}.csv and secret.txt
    python bench-clkhash-ratio.py time  WORK SCHEMA   time clkhash on every CSV, 1 and all processes;
                                                      writes clkhash-<schema>-<data>.json and
                                                      clkhash-<schema>.times (JSON)
    python bench-clkhash-ratio.py check WORK SCHEMA DATA RUST_CLKS   same CLKs on both sides?

The records follow /work/shared/vectors/clkhash/bench_clkhash.py: 'names' draws upper-cased names
from clkhash's bundled US name lists (tokens repeat, clkhash's lru_caches hit, as with real
data), 'unique' draws random 5-10 letter strings; birth dates and sexes are random. Synthetic
data only.
"""
import csv
import json
import multiprocessing
import os
import pkgutil
import platform
import random
import sys
import time

HEADER = ["given_name", "family_name", "birth_date", "sex"]
MODES = ("names", "unique")
SECRET = "ttp-agent-clkhash-ratio-secret (synthetic)"


def bundled_names(resource):
    rows = list(csv.reader(pkgutil.get_data("clkhash", resource).decode().splitlines()))[1:]
    return [r[0].strip().upper() for r in rows if r and r[0].strip()]


def generate(n, mode, seed=42):
    rnd = random.Random(seed)
    fem = bundled_names("data/female-first-names.csv")
    mal = bundled_names("data/male-first-names.csv")
    last = bundled_names("data/last-names.csv")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for _ in range(n):
        sex = rnd.choice("FM")
        if mode == "names":
            given = rnd.choice(fem if sex == "F" else mal)
            family = rnd.choice(last)
        else:
            given = "".join(rnd.choice(letters) for _ in range(rnd.randint(5, 10)))
            family = "".join(rnd.choice(letters) for _ in range(rnd.randint(5, 10)))
        dob = f"{rnd.randint(1920, 2023):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
        out.append([given, family, dob, sex])
    return out


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if rows[0] != HEADER:
        raise SystemExit(f"{path}: header {rows[0]} is not {HEADER}")
    return rows[1:]


def b64_of(clk):
    # clkhash 0.18 returns base64 strings from generate_clks; keep working if it returns bitarrays.
    if isinstance(clk, str):
        return clk
    from clkhash.serialization import serialize_bitarray
    return serialize_bitarray(clk)


def cmd_gen(work, n):
    for mode in MODES:
        with open(os.path.join(work, f"records-{mode}.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(HEADER)
            w.writerows(generate(n, mode))
    with open(os.path.join(work, "secret.txt"), "w", encoding="utf-8") as f:
        f.write(SECRET)


def cmd_time(work, schema_path):
    import clkhash
    from clkhash import clk, schema as clk_schema

    name = os.path.basename(schema_path).removeprefix("schema-").removesuffix(".json")
    with open(schema_path, encoding="utf-8") as f:
        sch = clk_schema.from_json_dict(json.load(f))
    with open(os.path.join(work, "secret.txt"), encoding="utf-8") as f:
        secret = f.read()
    print(f"# clkhash {clkhash.__version__}, Python {platform.python_version()}, "
          f"cpu_count={multiprocessing.cpu_count()}", flush=True)
    times = {}
    for mode in MODES:
        rows = read_rows(os.path.join(work, f"records-{mode}.csv"))
        for workers in (1, None):
            procs = 1 if workers == 1 else multiprocessing.cpu_count()
            t0 = time.perf_counter()
            out = clk.generate_clks(rows, sch, secret, validate=True, max_workers=workers)
            dt = time.perf_counter() - t0
            if len(out) != len(rows):
                raise SystemExit(f"clkhash returned {len(out)} CLKs for {len(rows)} records")
            times[f"{mode}/{procs}"] = {"records": len(rows), "seconds": dt}
            print(f"clkhash    {name:10s} data={mode:6s} processes={procs}: {len(rows)} records "
                  f"in {dt:7.2f} s = {len(rows) / dt:8.0f} records/s", flush=True)
            if workers == 1:
                with open(os.path.join(work, f"clkhash-{name}-{mode}.json"), "w") as f:
                    json.dump({"clks": [b64_of(c) for c in out]}, f)
    with open(os.path.join(work, f"clkhash-{name}.times"), "w") as f:
        json.dump(times, f)


def cmd_check(work, name, mode, rust_clks):
    with open(os.path.join(work, f"clkhash-{name}-{mode}.json")) as f:
        want = json.load(f)["clks"]
    with open(rust_clks) as f:
        got = json.load(f)["clks"]
    if len(want) != len(got):
        raise SystemExit(f"{name}/{mode}: clkhash made {len(want)} CLKs, ttp-agent {len(got)}")
    bad = [i for i, (a, b) in enumerate(zip(want, got)) if a != b]
    if bad:
        raise SystemExit(f"{name}/{mode}: {len(bad)} of {len(want)} CLKs differ (first at record {bad[0]})")
    print(f"check      {name:10s} data={mode:6s}: all {len(want)} CLKs equal clkhash's", flush=True)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "gen" and len(sys.argv) == 4:
        cmd_gen(sys.argv[2], int(sys.argv[3]))
    elif cmd == "time" and len(sys.argv) == 4:
        cmd_time(sys.argv[2], sys.argv[3])
    elif cmd == "check" and len(sys.argv) == 6:
        cmd_check(*sys.argv[2:6])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
