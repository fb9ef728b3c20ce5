//! `ttp-model`: checks the protocol model exhaustively and prints states, depth and time, or
//! the counterexample of each property that fails (as readable steps).
//!
//! Environment: `MODEL_SEEDED_BUG` (a name from `SeededBug`: the run must then fail),
//! `MODEL_RELISTING` (`until_done`, `once` or `both`, the default), `MODEL_CRASHES` (default
//! 1), `MODEL_FAULTS` (lost or undelivered answers, default 1), `MODEL_THREADS` (default 2),
//! `MODEL_TIMEOUT_SECS` (default 900: an unfinished check fails), `MODEL_RELEASE`
//! (`automatic`, the default, or `approval`: the approval model, with `MODEL_APPROVALS`
//! required, default 2; a seeded approval bug selects it by itself), `MODEL_MERGE_RACE=1`
//! (approval model only: the merge's read and write are two steps and users' commands may
//! commit between them; today's code fails `no_provide_after_denial` there), `MODEL_WITHDRAW=1`
//! (the withdrawal model: a local user withdraws R0's consent; a seeded withdrawal bug selects
//! it by itself), `MODEL_HANDOVER=1` (the handover model: the delivery webhook hands the
//! pseudonym log over to a receiver; a seeded hand-over bug selects it by itself),
//! `MODEL_PURGE=1` (the purge model: the cycle's housekeeping purges IDAT past retention; a
//! seeded purge bug selects it by itself).
//!
//! Exit status: 0 all properties hold; 1 a property failed (or a reachability check found
//! nothing: the model would be vacuous); 2 the check did not finish or the environment is
//! wrong.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model};
use ttp_model::state::Relisting;
use ttp_model::{SeededBug, TaskModel, trace};

fn env_u8(name: &str, default: u8) -> Result<u8, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v}: expected a small whole number")),
        Err(_) => Ok(default),
    }
}

fn run() -> Result<bool, String> {
    if std::env::args().nth(1).as_deref() == Some("--list-seeded-bugs") {
        for b in SeededBug::ALL {
            println!("{}", b.name());
        }
        return Ok(true);
    }
    let bug = match std::env::var("MODEL_SEEDED_BUG") {
        Ok(name) if !name.is_empty() => Some(SeededBug::from_name(&name).ok_or_else(|| {
            let names: Vec<&str> = SeededBug::ALL.iter().map(|b| b.name()).collect();
            format!(
                "MODEL_SEEDED_BUG={name}: unknown; known: {}",
                names.join(", ")
            )
        })?),
        _ => None,
    };
    let modes = match std::env::var("MODEL_RELISTING").as_deref() {
        Ok("until_done") => vec![Relisting::UntilDone],
        Ok("once") => vec![Relisting::Once],
        Ok("both") | Err(_) => vec![Relisting::UntilDone, Relisting::Once],
        Ok(other) => {
            return Err(format!(
                "MODEL_RELISTING={other}: expected until_done, once or both"
            ));
        }
    };
    let approvals = match std::env::var("MODEL_RELEASE").as_deref() {
        Ok("automatic") | Err(_) => None,
        Ok("approval") => Some(env_u8("MODEL_APPROVALS", 2)?.clamp(1, 2)),
        Ok(other) => {
            return Err(format!(
                "MODEL_RELEASE={other}: expected automatic or approval"
            ));
        }
    };
    let crashes = env_u8("MODEL_CRASHES", 1)?;
    let faults = env_u8("MODEL_FAULTS", 1)?;
    // A seeded run wants the shortest counterexample: breadth-first on one thread.
    let threads = if bug.is_some() {
        1
    } else {
        usize::from(env_u8("MODEL_THREADS", 2)?.max(1))
    };
    let timeout = Duration::from_secs(
        std::env::var("MODEL_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let mut ok = true;
    for relisting in modes {
        let mut model = TaskModel::new(relisting, crashes, faults, bug);
        if let Some(required) = approvals {
            model = model.with_approval(required);
        }
        if std::env::var("MODEL_MERGE_RACE").as_deref() == Ok("1") {
            model = model.with_merge_race();
        }
        if std::env::var("MODEL_HANDOVER").as_deref() == Ok("1") {
            model = model.with_handover();
        }
        if std::env::var("MODEL_WITHDRAW").as_deref() == Ok("1") {
            model = model.with_withdrawal();
        }
        if std::env::var("MODEL_PURGE").as_deref() == Ok("1") {
            model = model.with_purge();
        }
        let release = match model.approvals {
            Some(r) if model.merge_race => format!("approval({r} required, merge race)"),
            Some(r) => format!("approval({r} required)"),
            None => "automatic".into(),
        };
        let release = if model.handover {
            format!("{release}, handover")
        } else {
            release
        };
        let release = if model.withdraw {
            format!("{release}, consent withdrawal")
        } else {
            release
        };
        let release = if model.purge {
            format!("{release}, IDAT purge")
        } else {
            release
        };
        println!(
            "model: release={release} relisting={relisting:?} crashes={crashes} faults={faults} seeded_bug={} threads={threads}",
            bug.map_or("none", SeededBug::name)
        );
        let start = Instant::now();
        let mut builder = model.clone().checker().threads(threads).timeout(timeout);
        if bug.is_some() {
            builder = builder.finish_when(HasDiscoveries::AnyFailures);
        }
        let checker = builder.spawn_bfs().join();
        let elapsed = start.elapsed();
        println!(
            "  explored {} states ({} unique), depth {}, {:.1} s",
            checker.state_count(),
            checker.unique_state_count(),
            checker.max_depth(),
            elapsed.as_secs_f64()
        );
        let discoveries = checker.discoveries();
        let mut violated = false;
        for p in model.properties() {
            let found = discoveries.get(p.name);
            match (p.expectation, found) {
                (Expectation::Always | Expectation::Eventually, Some(path)) => {
                    violated = true;
                    println!("  VIOLATED {} — counterexample:", p.name);
                    // stateright keeps the last violation it met before it stopped (any thread,
                    // and within a block of states), not the first: search again for the
                    // shortest trace.
                    let path = shortest(&model, p.name, path.clone(), timeout);
                    print!("{}", trace::render(&model, path.into_vec()));
                }
                (Expectation::Always | Expectation::Eventually, None) => {
                    if bug.is_none() {
                        println!("  holds    {}", p.name);
                    }
                }
                (Expectation::Sometimes, Some(_)) if bug.is_none() => {
                    println!("  reached  {}", p.name)
                }
                (Expectation::Sometimes, Some(_)) => {}
                (Expectation::Sometimes, None) if bug.is_none() => {
                    ok = false;
                    println!(
                        "  NOT REACHED {} (the model would check it vacuously)",
                        p.name
                    );
                }
                (Expectation::Sometimes, None) => {}
            }
        }
        if violated {
            ok = false;
        } else if !checker.is_done() || elapsed >= timeout {
            return Err(format!(
                "the check did not finish within {} s",
                timeout.as_secs()
            ));
        }
    }
    Ok(ok)
}

/// The shortest counterexample of `property`, given one (`found`): the smallest depth bound
/// under which the checker still finds a violation, by bisection (each bounded run is a
/// breadth-first search that stops at the first failure; the trace it returns is no longer
/// than the bound, so at the smallest bound it is a shortest one).
fn shortest(
    model: &TaskModel,
    property: &'static str,
    found: stateright::Path<ttp_model::state::State, ttp_model::Action>,
    timeout: Duration,
) -> stateright::Path<ttp_model::state::State, ttp_model::Action> {
    // A path of n actions ends in a state at depth n + 1; stateright checks states of depth
    // below the bound.
    let within = |actions: usize| {
        model
            .clone()
            .checker()
            .timeout(timeout)
            .target_max_depth(actions + 2)
            .finish_when(HasDiscoveries::AnyOf([property].into_iter().collect()))
            .spawn_bfs()
            .join()
            .discovery(property)
    };
    let mut best = found;
    let (mut lo, mut hi) = (0, best.clone().into_actions().len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match within(mid) {
            Some(path) => {
                hi = path.clone().into_actions().len().min(mid);
                best = path;
            }
            None => lo = mid + 1,
        }
    }
    best
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ttp-model: {e}");
            ExitCode::from(2)
        }
    }
}
