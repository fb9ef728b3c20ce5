//! TLS: the crypto provider, extra trust anchors and the client certificate.
//!
//! Hospitals meet the fTTP through private CAs and TLS-inspecting proxies, and some gateways
//! require client certificates. The client therefore trusts the platform's roots *plus* an
//! optional PEM bundle (`tls.ca_file`), and presents an optional certificate chain and key
//! (`tls.client_cert_file`, `tls.client_key_file`).
//!
//! Files are parsed here rather than handed to `reqwest` as they are, for two reasons: errors
//! can name the file and what is wrong with it, and only the sections that matter are passed
//! on (OpenSSL writes an `EC PARAMETERS` block before EC keys, which `reqwest` would reject).
//! Key material lives in zeroised buffers and never appears in an error message.

use std::path::Path;
use std::sync::Once;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::{ClientConfigError, TlsSettings};

/// Installs `ring` as the process-wide rustls crypto provider, once.
///
/// `reqwest` is built without a provider of its own (`rustls-no-provider`), so one must be in
/// place before the first client is built. Idempotent and cheap; when some other part of the
/// process installed a provider first, that one stays.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // `Err` means a provider is already installed: that is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Adds the configured trust anchors and client identity to a `reqwest` builder.
pub(crate) fn configure(
    mut builder: reqwest::ClientBuilder,
    tls: &TlsSettings,
) -> Result<reqwest::ClientBuilder, ClientConfigError> {
    if let Some(path) = &tls.ca_file {
        let roots = load_ca_bundle(path)?;
        // Merged with, not replacing, the platform roots: the fTTP may sit behind a public
        // certificate while an inspecting proxy on the way needs the private CA.
        builder = builder.tls_certs_merge(roots);
    }
    match (&tls.client_cert_file, &tls.client_key_file) {
        (None, None) => {}
        (Some(cert), Some(key)) => builder = builder.identity(load_identity(cert, key)?),
        (Some(_), None) => {
            return Err(ClientConfigError::IncompleteClientIdentity {
                missing: "tls.client_key_file",
            });
        }
        (None, Some(_)) => {
            return Err(ClientConfigError::IncompleteClientIdentity {
                missing: "tls.client_cert_file",
            });
        }
    }
    Ok(builder)
}

fn read(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientConfigError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| ClientConfigError::ReadFile {
            what,
            path: path.to_path_buf(),
            source,
        })
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> ClientConfigError {
    ClientConfigError::InvalidPem {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// What is wrong with a PEM file, without quoting any of it (for a key file, the quote could be
/// key material).
fn pem_problem(err: &pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::NoItemsFound => "no PEM section of the expected kind".into(),
        pem::Error::SectionTooLarge => "a PEM section is larger than 256 MB".into(),
        _ => "the file is not valid PEM".into(),
    }
}

fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ClientConfigError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(invalid(
            what,
            path,
            "contains no \"-----BEGIN CERTIFICATE-----\" section",
        ));
    }
    Ok(certs)
}

fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientConfigError> {
    const WHAT: &str = "tls.ca_file";
    load_certificates(WHAT, path)?
        .iter()
        .enumerate()
        .map(|(i, der)| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| invalid(WHAT, path, format!("certificate #{}: {e}", i + 1)))
        })
        .collect()
}

fn load_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<reqwest::Identity, ClientConfigError> {
    const CERT: &str = "tls.client_cert_file";
    const KEY: &str = "tls.client_key_file";
    let chain = load_certificates(CERT, cert_path)?;
    let key_bytes = read(KEY, key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(
            KEY,
            key_path,
            "contains no unencrypted private key (PKCS#8 \"PRIVATE KEY\", PKCS#1 \"RSA PRIVATE \
             KEY\" or SEC1 \"EC PRIVATE KEY\"); encrypted keys are not supported",
        ),
        other => invalid(KEY, key_path, pem_problem(&other)),
    })?;

    // Re-encode just the certificates and the key, in the layout `reqwest` accepts.
    let mut identity_pem = Zeroizing::new(String::new());
    for cert in &chain {
        push_pem(&mut identity_pem, "CERTIFICATE", cert.as_ref());
    }
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    push_pem(&mut identity_pem, label, key.secret_der());
    reqwest::Identity::from_pem(identity_pem.as_bytes()).map_err(|e| {
        invalid(
            CERT,
            cert_path,
            format!(
                "the certificate and the key in {} do not form a usable identity: {e}",
                key_path.display()
            ),
        )
    })
}

fn push_pem(out: &mut String, label: &str, der: &[u8]) {
    use base64::Engine as _;
    let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // PEM lines are at most 64 characters; base64 output is ASCII, so byte chunks are chars.
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(content).expect("write temp file");
        f
    }

    #[test]
    fn missing_ca_file_is_named() {
        let settings = TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let err = configure(reqwest::Client::builder(), &settings).expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains("tls.ca_file") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_rejected() {
        let f = file(b"just some text\n");
        let settings = TlsSettings {
            ca_file: Some(f.path().to_path_buf()),
            ..TlsSettings::default()
        };
        let err = configure(reqwest::Client::builder(), &settings).expect_err("must fail");
        assert!(
            err.to_string()
                .contains("no \"-----BEGIN CERTIFICATE-----\""),
            "{err}"
        );
    }

    #[test]
    fn broken_pem_in_a_key_file_is_reported_without_quoting_it() {
        let cert = rcgen::generate_simple_self_signed(vec!["client".to_string()])
            .expect("test certificate");
        let cert_file = file(cert.cert.pem().as_bytes());
        let key_file = file(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n");
        let settings = TlsSettings {
            client_cert_file: Some(cert_file.path().to_path_buf()),
            client_key_file: Some(key_file.path().to_path_buf()),
            ..TlsSettings::default()
        };
        let err = configure(reqwest::Client::builder(), &settings).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("tls.client_key_file"), "{text}");
        assert!(text.contains("no END line"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }

    #[test]
    fn encrypted_or_absent_keys_are_explained() {
        let cert = rcgen::generate_simple_self_signed(vec!["client".to_string()])
            .expect("test certificate");
        let cert_file = file(cert.cert.pem().as_bytes());
        let key_file = file(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let settings = TlsSettings {
            client_cert_file: Some(cert_file.path().to_path_buf()),
            client_key_file: Some(key_file.path().to_path_buf()),
            ..TlsSettings::default()
        };
        let err = configure(reqwest::Client::builder(), &settings).expect_err("must fail");
        assert!(
            err.to_string().contains("encrypted keys are not supported"),
            "{err}"
        );
    }

    #[test]
    fn half_an_identity_is_rejected() {
        let settings = TlsSettings {
            client_cert_file: Some("/some/cert.pem".into()),
            ..TlsSettings::default()
        };
        let err = configure(reqwest::Client::builder(), &settings).expect_err("must fail");
        assert!(err.to_string().contains("tls.client_key_file"), "{err}");
    }

    #[test]
    fn identity_with_ec_parameters_block_is_accepted() {
        install_crypto_provider();
        let cert = rcgen::generate_simple_self_signed(vec!["client".to_string()])
            .expect("test certificate");
        let cert_file = file(cert.cert.pem().as_bytes());
        let key_pem = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            cert.signing_key.serialize_pem()
        );
        let key_file = file(key_pem.as_bytes());
        let settings = TlsSettings {
            client_cert_file: Some(cert_file.path().to_path_buf()),
            client_key_file: Some(key_file.path().to_path_buf()),
            ..TlsSettings::default()
        };
        let builder = configure(reqwest::Client::builder(), &settings).expect("identity loads");
        assert!(builder.build().is_ok());
    }

    #[test]
    fn pem_lines_are_wrapped_at_64() {
        let mut out = String::new();
        push_pem(&mut out, "CERTIFICATE", &[0u8; 100]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64));
        assert_eq!(lines.len(), 2 + 3); // 136 base64 chars
    }
}
