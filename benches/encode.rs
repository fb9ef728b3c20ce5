//! Encoding throughput: records per second for the fTTP record filter and the clkhash CLK
//! (blakeHash and doubleHash schemas), on one thread and on all cores (rayon).
//!
//! `cargo bench --bench encode`. Environment:
//!
//! * `ENCODE_BENCH_RECORDS` (default 100,000): synthetic records (see `support::people`).
//! * `ENCODE_BENCH_CSV`: read the records from this CSV instead (header
//!   `given_name,family_name,birth_date,sex`, the columns of the clkhash schemas); this is how
//!   `scripts/bench-clkhash-ratio.sh` makes both sides encode the very same records.
//! * `ENCODE_BENCH_SECRET_FILE`: the clkhash secret (default: a fixed synthetic one).
//! * `ENCODE_BENCH_CLK_OUT`: a directory; the CLKs of the last run of each schema are written
//!   there as `clks-<schema>.json` (`{"clks": [base64, ...]}`), so the ratio script can check
//!   that both sides computed the same filters before it compares their speed.
//! * `ENCODE_BENCH_ONLY`: comma-separated subset of `fttp-core,fttp-profile,clk-blake,clk-doublehash`.
//!
//! What is timed: encoding of records already in memory (as clkhash's `generate_clks` is timed
//! on a list in memory), collecting the filters. One untimed warm-up pass of 2,000 records
//! precedes each measurement; each figure is the best of `ENCODE_BENCH_REPEAT` (default 3) runs.
//!
//! * `fttp-core`: `FttpEncoder::encode` on already normalised values (L = 900, n = 2, k = 30,
//!   the starter configuration's parameters).
//! * `fttp-profile`: `ProfileEncoder::encode_record` with the starter configuration's
//!   normalisation (NFC, titles, German transliteration, upper case, …): what `submit` runs.
//! * `clk-blake`, `clk-doublehash`: `ClkEncoder::encode` with the two schemas of
//!   `benches/data/clkhash/` (copies of the clkhash vectors' schemas), clkhash's rules for
//!   validating and rendering values included.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use support::{BenchResult, Person, env_or, machine_line, per_sec};
use ttp_encode::Secret;
use ttp_encode::clk::{ClkEncoder, ClkSchema, to_base64};
use ttp_encode::fttp::{FttpEncoder, FttpParams};
use ttp_encode::profile::{FttpProfile, ProfileEncoder};

const DEFAULT_SECRET: &str = "ttp-agent-benchmark-secret (synthetic)";
const WARM_UP: usize = 2_000;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/clkhash")
}

/// The people of `ENCODE_BENCH_CSV`, or synthetic ones.
fn load_people(n: usize) -> BenchResult<(Vec<Person>, String)> {
    let Ok(path) = std::env::var("ENCODE_BENCH_CSV") else {
        return Ok((support::people(n, 42), "synthetic".to_string()));
    };
    let mut reader = csv::Reader::from_path(&path).map_err(|e| format!("{path}: {e}"))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{path}: no column {name:?}"))
    };
    let (g, f, d, s) = (
        col("given_name")?,
        col("family_name")?,
        col("birth_date")?,
        col("sex")?,
    );
    let mut people = Vec::new();
    for row in reader.records() {
        let row = row?;
        let sex = match row.get(s) {
            Some("F") => "F",
            Some("M") => "M",
            other => return Err(format!("{path}: sex {other:?} is neither F nor M").into()),
        };
        people.push(Person {
            given: row.get(g).unwrap_or("").to_string(),
            family: row.get(f).unwrap_or("").to_string(),
            birth_date: row.get(d).unwrap_or("").to_string(),
            sex,
        });
    }
    Ok((people, path))
}

/// Synthetic seeds: the bench needs *some* seeds, their values do not change the speed.
fn fttp_params() -> FttpParams {
    let fields = ["firstName", "lastName", "birthDate", "gender"];
    FttpParams {
        length: 900,
        n_gram_length: 2,
        random_position_number: 30,
        vocabulary: ttp_encode::fttp::DEFAULT_VOCABULARY.to_string(),
        balanced_seed: 0x5EED_0001,
        field_seeds: fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.to_string(), 0x5EED_1000 + i as i64))
            .collect(),
        field_order: fields.map(str::to_string).to_vec(),
    }
}

/// The starter configuration's fTTP profile (see `cli/init.rs`), with inline synthetic seeds.
fn fttp_profile() -> BenchResult<ProfileEncoder> {
    let steps = r#"["nfc", "collapse_whitespace", "strip_titles", "transliterate_de", "uppercase",
        {"replace": [["-", " "]]}, {"keep_chars": "A-Z "}, "collapse_whitespace", "trim"]"#;
    let json = format!(
        r#"{{
        "length": 900, "nGramLength": 2, "randomPositionNumber": 30,
        "balanced_seed": 1577058305,
        "field_seeds": {{"firstName": 1577062400, "lastName": 1577062401,
                         "birthDate": 1577062402, "gender": 1577062403}},
        "field_order": ["firstName", "lastName", "birthDate", "gender"],
        "sources": {{"firstName": "given", "lastName": "family", "birthDate": "birthdate",
                     "gender": "gender"}},
        "normalisation": {{"version": 1, "fields": {{
            "firstName": {steps}, "lastName": {steps},
            "birthDate": [{{"date": {{"from": "%Y-%m-%d", "to": "%Y%m%d"}}}}],
            "gender": [{{"map": {{"male": "M", "female": "F"}}}}]}}}}
        }}"#
    );
    let profile = FttpProfile::from_json(&json)?;
    Ok(ProfileEncoder::load_fttp(&profile, Path::new("."))?)
}

/// One encoder under test: a name and "encode record i".
struct Case<'a> {
    name: &'static str,
    encode: Box<dyn Fn(usize) -> Result<Vec<u8>, String> + Sync + 'a>,
}

/// Best-of-`repeat` time to encode all `n` records on the current rayon pool (`parallel`) or on
/// this thread.
fn measure(
    case: &Case<'_>,
    n: usize,
    parallel: bool,
    repeat: usize,
) -> Result<(Timing, Vec<Vec<u8>>), String> {
    let run = |count: usize| -> Result<Vec<Vec<u8>>, String> {
        if parallel {
            (0..count)
                .into_par_iter()
                .map(|i| (case.encode)(i))
                .collect()
        } else {
            (0..count).map(|i| (case.encode)(i)).collect()
        }
    };
    std::hint::black_box(run(WARM_UP.min(n))?);
    let mut best = Timing {
        wall: Duration::MAX,
        thread_cpu: Duration::MAX,
    };
    let mut out = Vec::new();
    for _ in 0..repeat.max(1) {
        let cpu = thread_cpu();
        let started = Instant::now();
        out = std::hint::black_box(run(n)?);
        best.wall = best.wall.min(started.elapsed());
        best.thread_cpu = best.thread_cpu.min(thread_cpu().saturating_sub(cpu));
    }
    Ok((best, out))
}

/// Wall time, and the CPU time of the calling thread (only meaningful single-threaded: on a
/// shared machine it is the steadier figure, since waiting for a core does not count).
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    thread_cpu: Duration,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() -> BenchResult {
    let n: usize = env_or("ENCODE_BENCH_RECORDS", 100_000)?;
    let repeat: usize = env_or("ENCODE_BENCH_REPEAT", 3)?;
    let only: Option<Vec<String>> = std::env::var("ENCODE_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == name));
    let (people, source) = load_people(n)?;
    let n = people.len();
    let secret_text = match std::env::var("ENCODE_BENCH_SECRET_FILE") {
        Ok(path) => std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?,
        Err(_) => DEFAULT_SECRET.to_string(),
    };
    let secret = Secret::new(secret_text.into_bytes());
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());

    println!("encode: {n} records ({source}), best of {repeat}");
    println!("{}", machine_line());

    // The fTTP core takes normalised values: the dates without dashes, the rest as generated
    // (upper-case ASCII already).
    let fttp_values: Vec<[String; 4]> = people
        .iter()
        .map(|p| {
            [
                p.given.clone(),
                p.family.clone(),
                p.birth_date.replace('-', ""),
                p.sex.to_string(),
            ]
        })
        .collect();
    let idat: Vec<BTreeMap<&str, String>> = people
        .iter()
        .map(|p| {
            BTreeMap::from([
                ("given", p.given.clone()),
                ("family", p.family.clone()),
                ("birthdate", p.birth_date.clone()),
                (
                    "gender",
                    if p.sex == "F" { "female" } else { "male" }.to_string(),
                ),
            ])
        })
        .collect();
    let clk_values: Vec<[&str; 4]> = people
        .iter()
        .map(|p| [p.given.as_str(), &p.family, &p.birth_date, p.sex])
        .collect();

    let fttp = FttpEncoder::new(&fttp_params())?;
    let profile = fttp_profile()?;
    let schema = |name: &str| -> BenchResult<ClkSchema> {
        let path = data_dir().join(format!("schema-{name}.json"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ClkSchema::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    let blake = ClkEncoder::new(&schema("blake")?, &secret);
    let double = ClkEncoder::new(&schema("doublehash")?, &secret);

    let cases = [
        Case {
            name: "fttp-core",
            encode: Box::new(|i| {
                let v = &fttp_values[i];
                Ok(fttp.encode(&[&v[0], &v[1], &v[2], &v[3]]))
            }),
        },
        Case {
            name: "fttp-profile",
            encode: Box::new(|i| {
                let rec = &idat[i];
                profile
                    .encode_record(&|source| rec.get(source).map(String::as_str))
                    .map_err(|e| format!("fttp-profile, record {i}: {e}"))
            }),
        },
        Case {
            name: "clk-blake",
            encode: Box::new(|i| {
                blake
                    .encode(&clk_values[i])
                    .map_err(|e| format!("clk-blake, record {i}: {e}"))
            }),
        },
        Case {
            name: "clk-doublehash",
            encode: Box::new(|i| {
                double
                    .encode(&clk_values[i])
                    .map_err(|e| format!("clk-doublehash, record {i}: {e}"))
            }),
        },
    ];

    let pool = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    for case in cases.iter().filter(|c| wanted(c.name)) {
        let (single, _) = measure(case, n, false, repeat)?;
        let (all, out) = pool.install(|| measure(case, n, true, repeat))?;
        println!(
            "RESULT {:<15} threads=1  records={n} seconds={:.3} records_per_sec={:.0} records_per_cpu_sec={:.0}",
            case.name,
            single.wall.as_secs_f64(),
            per_sec(n, single.wall),
            per_sec(n, single.thread_cpu)
        );
        println!(
            "RESULT {:<15} threads={cores:<2} records={n} seconds={:.3} records_per_sec={:.0} (speed-up {:.2}x)",
            case.name,
            all.wall.as_secs_f64(),
            per_sec(n, all.wall),
            single.wall.as_secs_f64() / all.wall.as_secs_f64()
        );
        if let (Ok(dir), Some(schema)) = (
            std::env::var("ENCODE_BENCH_CLK_OUT"),
            case.name.strip_prefix("clk-"),
        ) {
            let clks: Vec<String> = out.iter().map(|c| to_base64(c)).collect();
            let path = Path::new(&dir).join(format!("clks-{schema}.json"));
            std::fs::write(
                &path,
                serde_json::to_vec(&serde_json::json!({ "clks": clks }))?,
            )?;
        }
    }
    Ok(())
}
