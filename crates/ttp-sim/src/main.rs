//! `ttp-sim`: run the fTTP dispatcher simulator by hand, e.g. to try `ttp-agent` against it.
//!
//! Prints the base URL on stdout, serves until Ctrl-C, then prints its counters as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ttp_sim::{FaultConfig, FaultKind, FaultTiming, PsnFailure, SimAuth, SimConfig};

#[derive(Parser, Debug)]
#[command(
    name = "ttp-sim",
    version,
    about = "A simulated fTTP dispatcher for testing ttp-agent"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Listen on a non-loopback address. The simulator has no TLS and is not a real TTP:
    /// only for isolated test networks.
    #[arg(long)]
    allow_non_loopback: bool,
    /// File holding the API key clients must send (first line; surrounding whitespace is
    /// ignored). Without it, no authentication is required.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Header that carries the API key.
    #[arg(long, default_value = "apiKey")]
    api_key_header: String,
    /// Also accept the key as the legacy body parameter `apikey`.
    #[arg(long)]
    api_key_in_body: bool,
    /// Require the key in the header *and* the body (with --api-key-in-body).
    #[arg(long)]
    api_key_in_both: bool,
    /// Require an OAuth2 bearer token too: the client id. The token endpoint is
    /// `/realms/ttp/protocol/openid-connect/token` on the same address.
    #[arg(long, requires = "oauth2_client_secret_file")]
    oauth2_client_id: Option<String>,
    /// File holding the OAuth2 client secret (first line).
    #[arg(long, requires = "oauth2_client_id")]
    oauth2_client_secret_file: Option<PathBuf>,
    /// Lifetime of the OAuth2 tokens, in seconds.
    #[arg(long, default_value_t = 300)]
    oauth2_token_ttl_secs: u64,
    /// Element codes a send_idat may ask for (comma-separated); e.g. add degree,birthplace
    /// to ask for elements most records lack.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "given,family,birthdate,gender"
    )]
    elements: Vec<String>,
    /// Answer a $providePatientData that lacks a requested element with 422 (a stricter
    /// gateway than the IG, which accepts what the site knows).
    #[arg(long)]
    strict_elements: bool,
    /// Fraction of clearings whose send_idat names the filter and a pseudonym together.
    #[arg(long, default_value_t = 0.0)]
    idat_by_both: f64,
    /// Study name the dispatcher serves.
    #[arg(long, default_value = "mii")]
    study: String,
    /// Target (site) the dispatcher serves.
    #[arg(long, default_value = "dic_sim")]
    target: String,
    /// Fraction of new filters that need a clearing.
    #[arg(long, default_value_t = 0.25)]
    clearing: f64,
    /// Fraction of clearings that start with a repeat_request.
    #[arg(long, default_value_t = 0.5)]
    repeat_first: f64,
    /// Seed of all decisions about filters and tasks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lifetime of send_idat and repeat_request tasks, in seconds.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    task_ttl_secs: u64,
    /// Fraction of requests that fail (5xx, 429, dropped, truncated or malformed responses,
    /// before or after processing).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Seed of the fault sequence.
    #[arg(long, default_value_t = 0)]
    fault_seed: u64,
    /// Also inject delays of this many seconds (choose more than the client's timeout).
    #[arg(long)]
    fault_delay_secs: Option<u64>,
    /// Fail every $requestPsnFromBfWorkflow as a whole: `all` (HTTP 200, an `error` with the
    /// parts `all` and `error-code`), `error` (HTTP 200, an `error` naming no filter),
    /// `foreign` (HTTP 200 naming other filters) or an HTTP status such as `404`.
    #[arg(long, value_parser = parse_psn_failure)]
    psn_failure: Option<PsnFailure>,
    /// Status a $requestPsnFromBfWorkflow for an unknown study or target gets (400, 404, 422).
    #[arg(long, default_value_t = 404)]
    unknown_study_status: u16,
    /// The resend a repeat_request asks for is answered with the pseudonym at once.
    #[arg(long)]
    repeat_answers_pseudonym: bool,
}

fn parse_psn_failure(text: &str) -> Result<PsnFailure, String> {
    match text {
        "all" => Ok(PsnFailure::All {
            code: "processing".into(),
            display: "the whole request failed (simulated)".into(),
        }),
        "error" => Ok(PsnFailure::ErrorWithoutFilter {
            code: "processing".into(),
        }),
        "foreign" => Ok(PsnFailure::ForeignFilters),
        status => status
            .parse::<u16>()
            .map(PsnFailure::Status)
            .map_err(|_| "expected all, error, foreign or an HTTP status".to_string()),
    }
}

fn read_api_key(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the API key file {}: {err}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_owned();
    if key.is_empty() {
        return Err(format!(
            "the API key file {} is empty (the key must be on its first line)",
            path.display()
        ));
    }
    Ok(key)
}

fn config(args: &Args) -> Result<SimConfig, String> {
    let auth = match &args.api_key_file {
        None => SimAuth::None,
        Some(path) => {
            let key = read_api_key(path)?;
            let header = SimAuth::Header {
                name: args.api_key_header.clone(),
                value: key.clone(),
            };
            match (args.api_key_in_body, args.api_key_in_both) {
                (_, true) => SimAuth::AllOf(vec![header, SimAuth::BodyParam(key)]),
                (true, false) => SimAuth::AnyOf(vec![header, SimAuth::BodyParam(key)]),
                (false, false) => header,
            }
        }
    };
    let auth = match (&args.oauth2_client_id, &args.oauth2_client_secret_file) {
        (Some(client_id), Some(secret_file)) => {
            let bearer = SimAuth::Bearer(ttp_sim::OAuth2Client {
                client_id: client_id.clone(),
                client_secret: read_api_key(secret_file)?,
                token_ttl: Duration::from_secs(args.oauth2_token_ttl_secs),
                scope: None,
            });
            match auth {
                SimAuth::None => bearer,
                other => SimAuth::AllOf(vec![other, bearer]),
            }
        }
        _ => auth,
    };
    let mut kinds = vec![
        FaultKind::Status(500),
        FaultKind::Status(502),
        FaultKind::Status(503),
        FaultKind::Status(504),
        FaultKind::Status429 {
            retry_after_secs: 2,
        },
        FaultKind::Drop,
        FaultKind::Truncate,
        FaultKind::Malformed,
        FaultKind::TruncatedOk,
    ];
    if let Some(secs) = args.fault_delay_secs {
        kinds.push(FaultKind::Delay(Duration::from_secs(secs)));
    }
    Ok(SimConfig {
        study: args.study.clone(),
        target: args.target.clone(),
        auth,
        seed: args.seed,
        clearing: args.clearing,
        repeat_first: args.repeat_first,
        task_ttl: Duration::from_secs(args.task_ttl_secs),
        elements: args.elements.clone(),
        allow_missing_elements: !args.strict_elements,
        idat_by_both: args.idat_by_both,
        faults: FaultConfig {
            probability: args.fault_rate,
            kinds,
            seed: args.fault_seed,
            when: FaultTiming::Mixed,
        },
        psn_failure: args.psn_failure.clone(),
        unknown_study_status: args.unknown_study_status,
        repeat_answers_pseudonym: args.repeat_answers_pseudonym,
        ..SimConfig::default()
    })
}

/// The simulator has no TLS and hands out pseudonyms to anyone who asks: keep it off real
/// networks unless explicitly told otherwise.
fn check_listen(args: &Args) -> Result<(), String> {
    if args.listen.ip().is_loopback() || args.allow_non_loopback {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {} (not a loopback address); pass --allow-non-loopback \
             for an isolated test network",
            args.listen
        ))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match check_listen(&args).and_then(|()| config(&args)) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("ttp-sim: {err}");
            return ExitCode::from(2);
        }
    };
    let sim = match ttp_sim::start_on(cfg, args.listen).await {
        Ok(sim) => sim,
        Err(err) => {
            eprintln!("ttp-sim: cannot start on {}: {err}", args.listen);
            return ExitCode::from(1);
        }
    };
    println!("{}", sim.base_url());
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("ttp-sim: cannot wait for Ctrl-C ({err}); stopping");
    }
    let stats = sim.stats();
    sim.shutdown().await;
    match serde_json::to_string_pretty(&stats) {
        Ok(json) => println!("{json}"),
        Err(err) => eprintln!("ttp-sim: cannot print the statistics: {err}"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["ttp-sim"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("valid arguments")
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn only_loopback_unless_allowed() {
        assert!(check_listen(&args(&[])).is_ok());
        assert!(check_listen(&args(&["--listen", "[::1]:8080"])).is_ok());
        let err = check_listen(&args(&["--listen", "0.0.0.0:8080"])).expect_err("refused");
        assert!(err.contains("0.0.0.0:8080"), "{err}");
        assert!(check_listen(&args(&["--listen", "0.0.0.0:8080", "--allow-non-loopback"])).is_ok());
    }

    #[test]
    fn gateway_fidelity_switches_become_a_valid_configuration() {
        let dir = std::env::temp_dir().join(format!("ttp-sim-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("key");
        std::fs::write(&key, "k-1\n").expect("write");
        let key = key.to_str().expect("utf-8");
        let cfg = config(&args(&[
            "--api-key-file",
            key,
            "--api-key-in-both",
            "--oauth2-client-id",
            "site",
            "--oauth2-client-secret-file",
            key,
            "--elements",
            "given,degree,birthplace",
            "--strict-elements",
            "--idat-by-both",
            "0.5",
        ]))
        .expect("config");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(cfg.validate(), Ok(()));
        assert!(matches!(&cfg.auth, SimAuth::AllOf(all) if all.len() == 2));
        assert_eq!(cfg.elements, ["given", "degree", "birthplace"]);
        assert!(!cfg.allow_missing_elements);
        assert_eq!(cfg.idat_by_both, 0.5);
        assert!(config(&args(&[])).expect("config").allow_missing_elements);
    }

    #[test]
    fn options_become_a_valid_configuration() {
        let cfg = config(&args(&[
            "--clearing",
            "0.3",
            "--seed",
            "5",
            "--fault-rate",
            "0.3",
            "--fault-delay-secs",
            "40",
        ]))
        .expect("config");
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            (cfg.clearing, cfg.seed, cfg.faults.probability),
            (0.3, 5, 0.3)
        );
        assert!(
            cfg.faults
                .kinds
                .contains(&FaultKind::Delay(Duration::from_secs(40)))
        );
        assert_eq!(cfg.auth, SimAuth::None);

        let bad = config(&args(&["--clearing", "3"])).expect("config");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn api_key_file_must_exist_and_hold_a_key() {
        let dir = std::env::temp_dir().join(format!("ttp-sim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key_file = dir.join("key");
        std::fs::write(&key_file, "  synthetic-key  \nsecond line\n").expect("write");
        let path = key_file.to_string_lossy().into_owned();
        let cfg = config(&args(&["--api-key-file", &path, "--api-key-in-body"])).expect("config");
        assert_eq!(
            cfg.auth,
            SimAuth::AnyOf(vec![
                SimAuth::api_key_header("synthetic-key"),
                SimAuth::BodyParam("synthetic-key".into()),
            ])
        );
        std::fs::write(&key_file, "\n").expect("write");
        let err = config(&args(&["--api-key-file", &path])).expect_err("empty");
        assert!(err.contains("empty") && err.contains(&path), "{err}");
        let missing = dir.join("missing").to_string_lossy().into_owned();
        let err = config(&args(&["--api-key-file", &missing])).expect_err("missing");
        assert!(
            err.contains("cannot read") && !err.contains("synthetic-key"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
