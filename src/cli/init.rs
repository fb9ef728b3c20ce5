//! `ttp-agent init --dir DIR`: a complete, commented starting configuration.
//!
//! Writes `DIR/agent.toml`, `DIR/secrets/` with freshly generated secrets (mode 0600) where the
//! site has none yet — the IDAT encryption key and the encoding seeds — and places the store
//! in `DIR/store`. The fTTP settings (`[ttp]`) stay commented: they come from the fTTP operator,
//! in the file or as `TTP_AGENT__TTP__*` environment variables. Production encoding seeds come
//! from the fTTP operator too (the generated ones only let the site try the agent out: filters
//! made with them do not link with other sites').

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use rand::RngExt as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write into (created if missing; existing files are never overwritten).
    #[arg(long)]
    dir: PathBuf,
}

/// fTTP settings to write uncommented (the demo has them; a site fills them in later).
pub struct TtpSettings {
    pub base_url: String,
    pub study: String,
    pub target: String,
    pub api_key: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = write_starter(&args.dir, None)?;
    crate::outln!("wrote {}", config.display());
    crate::outln!(
        "secrets (mode 0600) in {}:",
        args.dir.join("secrets").display()
    );
    crate::outln!("  idat.key               encrypts IDAT in the store; back it up with the store");
    crate::outln!(
        "  encoding-seeds.json    fTTP filter seeds, freshly generated — replace them with the"
    );
    crate::outln!(
        "                         values your fTTP operator hands out before registering real records"
    );
    crate::outln!(
        "  admin-token            bearer token for the admin endpoints; uncomment [admin] token_file"
    );
    crate::outln!(
        "next: set [ttp] base_url, study, target and api_key_file (or TTP_AGENT__TTP__* variables),"
    );
    crate::outln!("then `ttp-agent check --config {}`", config.display());
    Ok(ExitCode::SUCCESS)
}

/// Write the starter files; returns the path of `agent.toml`. Refuses to overwrite anything.
pub fn write_starter(dir: &Path, ttp: Option<&TtpSettings>) -> anyhow::Result<PathBuf> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).with_context(|| format!("creating {}", secrets.display()))?;
    set_mode(&secrets, 0o700)?;
    let config_path = dir.join("agent.toml");
    if config_path.exists() {
        anyhow::bail!(
            "{} already exists; `init` never overwrites a configuration",
            config_path.display()
        );
    }

    let mut key = [0u8; 32];
    rand::rng().fill(&mut key[..]);
    write_secret(
        &secrets.join("idat.key"),
        &format!("{}\n", hex::encode(key)),
    )?;

    // java.util.Random uses 48 bits of its seed: draw them from the whole range anyway.
    let mut rng = rand::rng();
    let mut seed = || rng.random_range(1..(1i64 << 48));
    let seeds = serde_json::json!({
        "balanced_seed": seed(),
        "field_seeds": {
            "firstName": seed(), "lastName": seed(), "birthDate": seed(), "gender": seed(),
        },
    });
    write_secret(
        &secrets.join("encoding-seeds.json"),
        &format!("{}\n", serde_json::to_string_pretty(&seeds)?),
    )?;

    // 256 bits, hex: well above the 32 characters an admin token must have.
    let mut token = [0u8; 32];
    rand::rng().fill(&mut token[..]);
    write_secret(
        &secrets.join("admin-token"),
        &format!("{}\n", hex::encode(token)),
    )?;

    let mut text = starter_toml(ttp);
    if let Some(t) = ttp {
        write_secret(&secrets.join("api-key"), &format!("{}\n", t.api_key))?;
        text = text.replace(
            "# api_key_file = \"secrets/api-key\"",
            "api_key_file = \"secrets/api-key\"",
        );
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config_path)
        .with_context(|| format!("creating {}", config_path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok(config_path)
}

fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}

fn starter_toml(ttp: Option<&TtpSettings>) -> String {
    let ttp_section = match ttp {
        Some(t) => format!(
            "base_url = {:?}\nstudy = {:?}\ntarget = {:?}\n# api_key_file = \"secrets/api-key\"\n",
            t.base_url, t.study, t.target
        ),
        None => {
            "# Required, from the fTTP operator (or TTP_AGENT__TTP__BASE_URL, __STUDY, __TARGET,\n\
                 # __API_KEY_FILE in the environment):\n\
                 # base_url = \"https://fttp.example.org/ttp-fhir/fhir/dispatcher\"\n\
                 # study = \"your-study\"\n\
                 # target = \"your-site-domain\"\n\
                 # api_key_file = \"secrets/api-key\"\n"
                .to_string()
        }
    };
    format!(
        r#"# ttp-agent configuration, written by `ttp-agent init`.
# Relative paths are resolved against this file's directory. Every key is documented, with its
# default and its environment variable, in config/agent.toml of the ttp-agent sources.

[ttp]
{ttp_section}
[schedule]
# When to poll $requestTasks (seconds field first), in which time zone, with a random delay of
# up to `jitter` so that many sites do not poll at the same second.
cron = "0 */15 * * * *"
timezone = "Europe/Berlin"
jitter = "60s"

[store]
path = "store"
idat_key_file = "secrets/idat.key"

[encoding]
# How records become Bloom filters: the Mainzelliste fTTP record-level filter (the format the
# fTTP's E-PIX consumes). length, seeds and normalisation are agreed per study with the fTTP
# operator: replace the generated seeds file with theirs before registering real records.
encoder = "fttp"
length = 900
nGramLength = 2
randomPositionNumber = 30
vocabulary = "ABCDEFGHIJKLMNOPQRSTUVWXYZ .-0123456789"
seeds_file = "secrets/encoding-seeds.json"
field_order = ["firstName", "lastName", "birthDate", "gender"]

# Which IDAT element (CSV column of `submit`) feeds which field.
[encoding.sources]
firstName = "given"
lastName = "family"
birthDate = "birthdate"
gender = "gender"

# Normalisation before encoding. Bump `version` whenever a step changes: filters made with
# different normalisations do not link.
[encoding.normalisation]
version = 1
fields.firstName = ["nfc", "collapse_whitespace", "strip_titles", "transliterate_de", "uppercase", {{ replace = [["-", " "]] }}, {{ keep_chars = "A-Z " }}, "collapse_whitespace", "trim"]
fields.lastName = ["nfc", "collapse_whitespace", "strip_titles", "transliterate_de", "uppercase", {{ replace = [["-", " "]] }}, {{ keep_chars = "A-Z " }}, "collapse_whitespace", "trim"]
fields.birthDate = [{{ date = {{ from = "%Y-%m-%d", to = "%Y%m%d" }} }}]
# `submit` stores gender canonically (m/w become male/female; d, x become divers, unbestimmt,
# which FHIR calls `other`): map all of them.
fields.gender = [{{ map = {{ male = "M", female = "F", other = "O", divers = "O", unbestimmt = "O", unknown = "U" }} }}]

[submit]
batch_size = 50

[dispatch]
concurrency = 8
grace_period = "10s"
# Release of patient data: "automatic", or "approval" (each send_idat waits until
# `approvals_required` different local users run `ttp-agent approve TASK`; `ttp-agent deny`
# closes it unanswered; it still expires at its deadline).
idat_release = "automatic"
approvals_required = 1
# The elements a send_idat may be answered with at all (the site's release policy, agreed with
# the data protection officer). A requested element outside the list is never sent; a task
# asking only for such elements waits for a person. Default: every element code (listed in
# config/agent.toml of the sources).
# release_elements = ["given", "family", "birthdate", "gender"]

[admin]
listen = "127.0.0.1:9464"
warn_before_expiry = "48h"
# Require the generated token on every admin endpoint but /healthz (needed for a listener
# other hosts can reach; recommended for any):
# token_file = "secrets/admin-token"

[control]
# The daemon's control socket: commands run through the running daemon over it.
socket = "control.sock"

[log]
format = "auto"
level = "info"
"#
    )
}
