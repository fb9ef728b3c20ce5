//! TLS against a real server on 127.0.0.1 with certificates generated in the test (rcgen):
//! a private CA must be configurable, an unknown CA must fail as `Transient` before anything is
//! sent, and a client certificate must be presented when configured.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::client::{CAPABILITY_STATEMENT, Reply, Server, settings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use ttp_agent::client::{ClientSettings, ErrorClass, OAuth2Settings, TtpClient};
use ttp_encode::Secret;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf certificate and its key.
    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "test leaf");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert, key)
    }
}

fn pem_file(content: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(content.as_bytes()).expect("write");
    file
}

/// Accepts TCP connections, completes the TLS handshake and records the client certificate
/// each connection presented. Connections whose handshake fails are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    client_certs: Arc<Mutex<Vec<Option<CertificateDer<'static>>>>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                let presented = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first().cloned());
                self.client_certs.lock().expect("lock").push(presented);
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

struct TlsServer {
    server: Server,
    client_certs: Arc<Mutex<Vec<Option<CertificateDer<'static>>>>>,
}

impl TlsServer {
    /// An HTTPS server for 127.0.0.1 with a certificate from `ca`; when `client_ca` is given,
    /// client certificates issued by it are required.
    async fn start(ca: &Ca, client_ca: Option<&Ca>) -> TlsServer {
        TlsServer::start_with(ca, client_ca, vec![Reply::fhir(200, CAPABILITY_STATEMENT)]).await
    }

    /// [`TlsServer::start`] answering with `replies`.
    async fn start_with(ca: &Ca, client_ca: Option<&Ca>, replies: Vec<Reply>) -> TlsServer {
        ttp_agent::client::tls::install_crypto_provider();
        let (cert, key) = ca.issue(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(client_ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(client_ca.der()).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server certificate");
        let client_certs = Arc::new(Mutex::new(Vec::new()));
        let listener = TlsListener {
            tcp: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_certs: client_certs.clone(),
        };
        let server = Server::serve(listener, replies);
        TlsServer {
            server,
            client_certs,
        }
    }

    fn base_url(&self) -> String {
        format!("https://{}/ttp-fhir/fhir/dispatcher", self.server.addr)
    }
}

fn tls_settings(server: &TlsServer, ca_file: Option<&tempfile::NamedTempFile>) -> ClientSettings {
    let mut s = settings(&server.base_url());
    s.retry.max_attempts = 1;
    s.tls.ca_file = ca_file.map(|f| f.path().to_path_buf());
    s
}

#[tokio::test]
async fn a_private_ca_from_ca_file_is_trusted() {
    let ca = Ca::new("Test Hospital CA");
    let server = TlsServer::start(&ca, None).await;
    let ca_file = pem_file(&ca.pem());
    let client = TtpClient::new(tls_settings(&server, Some(&ca_file))).expect("valid");
    client.metadata().await.expect("TLS with the configured CA");
    assert_eq!(server.server.request_count(), 1);
    assert_eq!(
        server.client_certs.lock().expect("lock").as_slice(),
        &[None]
    );
}

#[tokio::test]
async fn an_unknown_ca_fails_as_transient_before_sending() {
    let ca = Ca::new("Test Hospital CA");
    let server = TlsServer::start(&ca, None).await;
    let client = TtpClient::new(tls_settings(&server, None)).expect("valid");
    let err = client.metadata().await.expect_err("untrusted certificate");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::Transient, None),
        "{err}"
    );
    assert!(err.detail.contains("could not connect"), "{err}");
    assert_eq!(server.server.request_count(), 0);

    // A CA that did not issue the server's certificate does not help either.
    let other = pem_file(&Ca::new("Some Other CA").pem());
    let client = TtpClient::new(tls_settings(&server, Some(&other))).expect("valid");
    let err = client.metadata().await.expect_err("untrusted certificate");
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert_eq!(server.server.request_count(), 0);
}

#[tokio::test]
async fn the_client_certificate_is_presented() {
    let ca = Ca::new("Test Hospital CA");
    let client_ca = Ca::new("Test Client CA");
    let server = TlsServer::start(&ca, Some(&client_ca)).await;
    let (client_cert, client_key) =
        client_ca.issue(&["site.example"], ExtendedKeyUsagePurpose::ClientAuth);
    let ca_file = pem_file(&ca.pem());
    let cert_file = pem_file(&client_cert.pem());
    let key_file = pem_file(&client_key.serialize_pem());

    let mut s = tls_settings(&server, Some(&ca_file));
    s.tls.client_cert_file = Some(cert_file.path().to_path_buf());
    s.tls.client_key_file = Some(key_file.path().to_path_buf());
    TtpClient::new(s)
        .expect("valid")
        .metadata()
        .await
        .expect("mTLS handshake");
    assert_eq!(
        server.client_certs.lock().expect("lock").as_slice(),
        &[Some(client_cert.der().clone())]
    );

    // Without the certificate the server refuses in the handshake. With TLS 1.3 the client
    // has already written its request by then, but the alert shows it was never processed.
    let client = TtpClient::new(tls_settings(&server, Some(&ca_file))).expect("valid");
    let err = client.metadata().await.expect_err("no client certificate");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::Transient, None),
        "{err}"
    );
    assert!(err.detail.contains("CertificateRequired"), "{err}");
    assert_eq!(server.server.request_count(), 1);
}

/// A site's client certificate and the trust for the server, as files.
struct MtlsSite {
    cert: rcgen::Certificate,
    ca_file: tempfile::NamedTempFile,
    cert_file: tempfile::NamedTempFile,
    key_file: tempfile::NamedTempFile,
}

impl MtlsSite {
    fn new(ca: &Ca, client_ca: &Ca) -> MtlsSite {
        let (cert, key) = client_ca.issue(&["site.example"], ExtendedKeyUsagePurpose::ClientAuth);
        MtlsSite {
            ca_file: pem_file(&ca.pem()),
            cert_file: pem_file(&cert.pem()),
            key_file: pem_file(&key.serialize_pem()),
            cert,
        }
    }

    fn settings(&self, server: &TlsServer) -> ClientSettings {
        let mut s = tls_settings(server, Some(&self.ca_file));
        s.tls.client_cert_file = Some(self.cert_file.path().to_path_buf());
        s.tls.client_key_file = Some(self.key_file.path().to_path_buf());
        s
    }
}

/// mTLS combines with every other credential: here the key in the header and the body, and
/// Basic auth, all on the one request that carries the client certificate.
#[tokio::test]
async fn mtls_combines_with_the_api_key_in_header_and_body_and_basic_auth() {
    let ca = Ca::new("Test Hospital CA");
    let client_ca = Ca::new("Test Client CA");
    let server = TlsServer::start_with(&ca, Some(&client_ca), vec![Reply::ok_parameters()]).await;
    let site = MtlsSite::new(&ca, &client_ca);
    let mut s = site.settings(&server);
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    s.auth.api_key_in_header = true;
    s.auth.api_key_in_body = true;
    s.auth.basic = Some(("site-a".into(), Secret::from_text("pw")));
    TtpClient::new(s)
        .expect("valid")
        .request_tasks()
        .await
        .expect("accepted");

    let request = &server.server.requests()[0];
    assert_eq!(request.header("apikey"), Some("key-4711"));
    assert_eq!(request.header("authorization"), Some("Basic c2l0ZS1hOnB3"));
    assert!(
        request.json()["parameter"]
            .as_array()
            .expect("array")
            .contains(&serde_json::json!({"name": "apikey", "valueString": "key-4711"}))
    );
    assert_eq!(
        server.client_certs.lock().expect("lock").as_slice(),
        &[Some(site.cert.der().clone())]
    );
}

/// And with OAuth2: the token endpoint (here on the same TLS server) gets the client
/// credentials as Basic and never the API key; the dispatcher gets the bearer token and the
/// key, over mTLS.
#[tokio::test]
async fn mtls_combines_with_an_oauth2_bearer_token() {
    let ca = Ca::new("Test Hospital CA");
    let client_ca = Ca::new("Test Client CA");
    let token = Reply::status(200)
        .header("content-type", "application/json")
        .body(br#"{"access_token":"tok-123","token_type":"Bearer","expires_in":300}"#.to_vec());
    let server = TlsServer::start_with(
        &ca,
        Some(&client_ca),
        vec![token, Reply::ok_parameters(), Reply::ok_parameters()],
    )
    .await;
    let site = MtlsSite::new(&ca, &client_ca);
    let mut s = site.settings(&server);
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    s.auth.oauth2 = Some(OAuth2Settings {
        token_url: format!(
            "https://{}/realms/ttp/protocol/openid-connect/token",
            server.server.addr
        )
        .parse()
        .expect("a URL"),
        client_id: "site a".into(),
        client_secret: Secret::from_text("s3cret"),
        scope: Some("dispatcher read".into()),
    });
    let client = TtpClient::new(s).expect("valid");
    assert!(!format!("{client:?}").contains("s3cret"));
    client.request_tasks().await.expect("accepted");
    client.request_tasks().await.expect("the token is cached");

    let requests = server.server.requests();
    assert_eq!(requests.len(), 3, "one token request, two operations");
    let token_request = &requests[0];
    assert!(token_request.path.ends_with("/openid-connect/token"));
    assert_eq!(
        token_request.header("apikey"),
        None,
        "the key stays with the fTTP"
    );
    assert_eq!(
        token_request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&token_request.body),
        "grant_type=client_credentials&scope=dispatcher+read"
    );
    // base64("site+a:s3cret")
    assert_eq!(
        token_request.header("authorization"),
        Some("Basic c2l0ZSthOnMzY3JldA==")
    );
    for request in &requests[1..] {
        assert_eq!(request.header("authorization"), Some("Bearer tok-123"));
        assert_eq!(request.header("apikey"), Some("key-4711"));
    }
    assert!(
        server
            .client_certs
            .lock()
            .expect("lock")
            .iter()
            .all(|c| c.as_ref() == Some(site.cert.der())),
        "every connection presented the client certificate"
    );
}
