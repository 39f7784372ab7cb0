//! Credentials (a CA, a serving certificate, the admin token), the kubeconfig, and the TLS
//! listener. The CA key and the token persist in `DATA_DIR/pki`; the serving certificate is
//! re-issued on every start so that its SANs always match the address being served.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The server's secrets, as PEM/DER and the bearer token.
pub struct Credentials {
    pub ca_pem: String,
    pub token: String,
    ca_key: KeyPair,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

/// The CA's parameters are fixed, so that re-creating its certificate from the persisted key
/// yields the same issuer name for the serving certificates it signs.
fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "yun-ca");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

impl Credentials {
    pub fn load_or_create(data_dir: &Path, addr: SocketAddr) -> Result<Self> {
        Self::load_or_create_with(data_dir, addr, &[])
    }

    /// [`Credentials::load_or_create`], the serving certificate also naming `extra_sans`
    /// (the `kubernetes` Service's IP and DNS names, the address advertised to pods).
    pub fn load_or_create_with(
        data_dir: &Path,
        addr: SocketAddr,
        extra_sans: &[String],
    ) -> Result<Self> {
        let pki = data_dir.join("pki");
        std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
        std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700))?;
        let ca_key_path = pki.join("ca.key");
        let token_path = pki.join("token");
        // Files written by earlier versions (or by hand) may be readable by others.
        for existing in [&ca_key_path, &token_path] {
            if existing.exists() {
                std::fs::set_permissions(existing, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {}", existing.display()))?;
            }
        }
        let ca_key = match std::fs::read_to_string(&ca_key_path) {
            Ok(pem) => KeyPair::from_pem(&pem)
                .with_context(|| format!("reading {}", ca_key_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate()?;
                write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
                key
            }
            Err(e) => return Err(e).context(format!("reading {}", ca_key_path.display())),
        };
        let ca_cert = ca_params()?.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        write_private(&pki.join("ca.crt"), ca_pem.as_bytes())?;
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = hex(&random_bytes(32)?);
                write_private(&token_path, t.as_bytes())?;
                t
            }
        };
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let host = addr.ip();
        if !host.is_unspecified() && !host.is_loopback() {
            sans.push(host.to_string());
        }
        for san in extra_sans {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "yun-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        write_private(&pki.join("server.crt"), cert.pem().as_bytes())?;
        write_private(&pki.join("server.key"), key.serialize_pem().as_bytes())?;
        Ok(Credentials {
            ca_pem,
            token,
            ca_key,
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// Write `DATA_DIR/kubeconfig` (mode 0600) pointing at `addr` with a client certificate
    /// for `yun-admin` in `system:masters`. The admin token rides along: the controller manager
    /// and agents `yun up` starts from this file take it for the agent's log endpoint, and the
    /// server checks the certificate first, so both name the same user.
    pub fn write_kubeconfig(&self, data_dir: &Path, addr: SocketAddr) -> Result<PathBuf> {
        let ip = if addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr.ip()
        };
        let server = format!("https://{}", SocketAddr::new(ip, addr.port()));
        let groups = [crate::auth::MASTERS.to_string()];
        // A year, renewed on every start.
        let valid = std::time::Duration::from_secs(365 * 24 * 3600);
        let (cert, key) = mint_client(&self.ca_key, crate::auth::ADMIN, &groups, valid)?;
        let mut text = kubeconfig_text(&server, &self.ca_pem, crate::auth::ADMIN, &cert, &key);
        text = text.replace(
            "    client-key-data:",
            &format!("    token: {}\n    client-key-data:", self.token),
        );
        let path = data_dir.join("kubeconfig");
        write_private(&path, text.as_bytes())?;
        Ok(path)
    }

    /// The verifier of client certificates signed by the CA (checked per connection by
    /// `auth::Authenticator`, so a bad one is a 401 rather than a failed handshake).
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>> {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls_pemfile::certs(&mut self.ca_pem.as_bytes())
            .next()
            .context("CA certificate PEM")??;
        roots.add(der)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?)
    }

    pub fn acceptor(&self) -> Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(OptionalClientCert(provider.clone())))
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        // The server speaks HTTP/1.1 only (watches are chunked responses).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The handshake's side of client certificates: asked for, optional, and any chain accepted as
/// long as the client proves it holds the key (the handshake signature is checked here). Whether
/// the chain is the CA's and unexpired is the authenticator's call, so that a bad certificate
/// gets kube's 401 instead of a TLS alert the client reports as a network error.
#[derive(Debug)]
struct OptionalClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: Go clients (kubectl) send their certificate only if it matches a hint, and
        // a certificate from another CA must arrive to be refused with a 401.
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client certificate (PEM) and its key (PEM) for `user` in `groups`, signed by the CA,
/// valid from a few minutes ago (clock skew) for `valid`.
fn mint_client(
    ca_key: &KeyPair,
    user: &str,
    groups: &[String],
    valid: std::time::Duration,
) -> Result<(String, String)> {
    let ca_cert = ca_params()?.self_signed(ca_key)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        p.distinguished_name
            .push(DnType::OrganizationName, g.as_str());
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + valid;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca_cert, ca_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn kubeconfig_text(server: &str, ca_pem: &str, user: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: yun\ncontexts:\n- context:\n    cluster: yun\n    user: {user}\n  name: yun\ncurrent-context: yun\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\npreferences: {{}}\n",
        b64(ca_pem),
        b64(cert),
        b64(key)
    )
}

/// A kubeconfig for `user` in `groups` with a client certificate signed by the CA in
/// `DATA_DIR/pki` (root only), valid for `valid`, for the server `DATA_DIR/kubeconfig` names.
pub fn user_kubeconfig(
    data_dir: &Path,
    user: &str,
    groups: &[String],
    valid: std::time::Duration,
) -> Result<String> {
    let key_path = data_dir.join("pki/ca.key");
    let pem = std::fs::read_to_string(&key_path).with_context(|| {
        format!(
            "reading {} (run as root on the server host)",
            key_path.display()
        )
    })?;
    let ca_key =
        KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", key_path.display()))?;
    let admin = data_dir.join("kubeconfig");
    let text = std::fs::read_to_string(&admin)
        .with_context(|| format!("reading {} (has `yun up` run?)", admin.display()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
            .with_context(|| format!("{}: no {name}", admin.display()))
    };
    // The server and the CA that vouches for it, as the admin kubeconfig has them.
    let server = field("server: ")?;
    let ca_b64 = field("certificate-authority-data: ")?;
    let ca_pem =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64.trim())?)
            .with_context(|| format!("{}: certificate-authority-data", admin.display()))?;
    let (cert, key) = mint_client(&ca_key, user, groups, valid)?;
    Ok(kubeconfig_text(&server, &ca_pem, user, &cert, &key))
}

/// Write a file readable by its owner only, atomically (temp + fsync + rename).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A handle on the connection a request came in on, in the request's extensions: a handler
/// whose client stopped reading (a stalled watch) closes it, which is the only way to get back
/// the memory held by the response the client will never read.
#[derive(Clone, Default)]
pub struct Connection(Arc<tokio::sync::Notify>);

impl Connection {
    /// Close the connection (whatever it is doing; the client sees it reset).
    pub fn close(&self) {
        // notify_one keeps a permit if the connection task is not waiting yet.
        self.0.notify_one();
    }
}

/// Accept TCP connections, run TLS handshakes and serve HTTP/1.1 on each, every connection
/// in its own task, until `shutdown` turns true; then every connection is dropped, so that
/// nothing holds the server's state (and the store) any more when this returns.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, _peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        conns.spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(stream)) = handshake.await else {
                return;
            };
            let peer = stream.get_ref().1.peer_certificates().map(|c| {
                crate::auth::PeerCerts::new(c.iter().map(|d| d.clone().into_owned()).collect())
            });
            let handle = Connection::default();
            let kill = handle.0.clone();
            let app = app.map_request(move |mut req: axum::http::Request<_>| {
                req.extensions_mut().insert(handle.clone());
                if let Some(p) = &peer {
                    req.extensions_mut().insert(p.clone());
                }
                req
            });
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                // exec, attach and port-forward take the connection over.
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("connection: {e}");
                },
                // Dropping the connection drops its socket, buffers and response body.
                _ = kill.notified() => tracing::debug!("connection closed by the server"),
            }
        });
    }
    conns.shutdown().await;
}
