//! The cluster's certificates: a cluster CA made by `dstream cluster init`,
//! which signs one certificate per node; coordinator and workers accept only
//! peers holding a certificate that CA signed (mutual TLS).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The name every node's certificate carries and every client checks.
pub const SERVER_NAME: &str = "dstream";

fn tls_err(what: impl Into<String>) -> impl FnOnce(String) -> Error {
    let what = what.into();
    move |message| Error::Tls { what, message }
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("restricting {}", path.display()), e))?;
    }
    Ok(())
}

/// Makes a cluster CA in `dir` and certificates for the coordinator, for
/// `workers` workers (`worker-1` ...) and for `admin` (what `dstream
/// submit` and `dstream status` present); returns the files written.
/// Refuses to overwrite an existing CA.
pub fn init(dir: &Path, workers: u32) -> Result<Vec<PathBuf>, Error> {
    let ca_key_path = dir.join("ca.key");
    if ca_key_path.exists() {
        return Err(Error::Tls {
            what: dir.display().to_string(),
            message: "a cluster CA is already there (ca.key); use another directory".into(),
        });
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let err = |m: rcgen::Error| Error::Tls {
        what: "making certificates".into(),
        message: m.to_string(),
    };
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "dstream cluster CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let mut written = Vec::new();
    let ca_pem = dir.join("ca.pem");
    fs::write(&ca_pem, ca_cert.pem())
        .map_err(|e| Error::io(format!("writing {}", ca_pem.display()), e))?;
    write_private(&ca_key_path, &ca_key.serialize_pem())?;
    written.extend([ca_pem, ca_key_path]);
    let issuer = Issuer::new(ca, ca_key);
    let names = ["coordinator".to_string(), "admin".to_string()]
        .into_iter()
        .chain((1..=workers).map(|i| format!("worker-{i}")));
    for name in names {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, name.clone());
        let cert = p.signed_by(&key, &issuer).map_err(err)?;
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        fs::write(&c, cert.pem()).map_err(|e| Error::io(format!("writing {}", c.display()), e))?;
        write_private(&k, &key.serialize_pem())?;
        written.extend([c, k]);
    }
    Ok(written)
}

/// A peer silent this long (no packet, not even a keep-alive) is gone: its
/// connection fails and so does any request on it. Keep-alives go every
/// 500 ms, so only a dead or cut-off peer is this silent.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(std::time::Duration::from_millis(500)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("a small timeout"),
    ));
    Arc::new(t)
}

/// A node's identity: its certificate chain and key, and the cluster CA it
/// trusts.
#[derive(Debug)]
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Identity {
    /// Loads `NAME.pem`, `NAME.key` and `ca.pem` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, Error> {
        let file = |f: String| dir.join(f);
        let read_certs = |p: &Path| -> Result<Vec<CertificateDer<'static>>, Error> {
            let certs = CertificateDer::pem_file_iter(p)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::Tls {
                    what: p.display().to_string(),
                    message: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(Error::Tls {
                    what: p.display().to_string(),
                    message: "no certificate in it".into(),
                });
            }
            Ok(certs)
        };
        let certs = read_certs(&file(format!("{name}.pem")))?;
        let key_path = file(format!("{name}.key"));
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| Error::Tls {
            what: key_path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for c in read_certs(&file("ca.pem".into()))? {
            roots.add(c).map_err(|e| Error::Tls {
                what: "ca.pem".into(),
                message: e.to_string(),
            })?;
        }
        Ok(Self {
            certs,
            key,
            roots: Arc::new(roots),
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// QUIC server settings: TLS 1.3, a client certificate signed by the
    /// cluster CA required.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, Error> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            Self::provider(),
        )
        .build()
        .map_err(|e| tls_err("client verifier")(e.to_string()))?;
        let tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("server config")(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| tls_err("server certificate")(e.to_string()))?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| tls_err("QUIC server config")(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
        cfg.transport_config(transport());
        Ok(cfg)
    }

    /// QUIC client settings: the server must present a certificate of the
    /// cluster CA; this node presents its own.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, Error> {
        let tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("client config")(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| tls_err("client certificate")(e.to_string()))?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| tls_err("QUIC client config")(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
        cfg.transport_config(transport());
        Ok(cfg)
    }
}
