//! Certificates: making a cluster's CA and leaves, loading them, and the rustls configs that
//! enforce mutual TLS on every endpoint.
//!
//! A certificate says which [`Role`] it plays. Node certificates carry a URI subject
//! alternative name `urn:etch:node:NAME` and both the server-auth and client-auth extended key
//! usages (nodes dial each other). Client certificates carry client-auth only and no node URI;
//! their common name is the client's principal. The peer endpoint admits [`Role::Node`] only,
//! so a client certificate can never act as a node, whoever signed it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// The URI prefix that marks a node certificate.
pub const NODE_URI_PREFIX: &str = "urn:etch:node:";

/// Which side of the protocol a certificate may play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Node,
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Client => "client",
        })
    }
}

/// Why certificate material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no {what} found in PEM")]
    Pem { path: PathBuf, what: &'static str },
    #[cfg(feature = "authority")]
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("unreadable certificate: {0}")]
    Parse(String),
    #[error("certificate revocation list {path} {reason}")]
    Crl { path: PathBuf, reason: String },
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The crypto provider used everywhere in etch (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(feature = "authority")]
mod authority;
#[cfg(feature = "authority")]
mod verify;

#[cfg(feature = "authority")]
pub use authority::*;
#[cfg(feature = "authority")]
pub use verify::*;

/// Paths of one party's TLS material: the cluster CA, its certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files named `ca.crt`, `NAME.crt` and `NAME.key` in `dir`, as [`init_dir`] writes them.
    pub fn in_dir(dir: impl AsRef<Path>, name: &str) -> Self {
        let dir = dir.as_ref();
        TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// Loaded TLS material, ready to build rustls configs from.
pub struct Identity {
    roots: Arc<RootCertStore>,
    /// The CA certificates of the bundle, to check revocation lists against (a node's).
    #[cfg_attr(not(feature = "authority"), allow(dead_code))]
    cas: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Revocation lists the server side checks client certificates against (a node's).
    #[cfg_attr(not(feature = "authority"), allow(dead_code))]
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads and parses the three files.
    pub fn load(files: &TlsFiles) -> Result<Self> {
        let ca = read_bytes(&files.ca)?;
        let mut roots = RootCertStore::empty();
        let mut cas = Vec::new();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|_| PkiError::Pem {
                path: files.ca.clone(),
                what: "certificate",
            })?;
            roots.add(cert.clone())?;
            cas.push(cert);
        }
        if cas.is_empty() {
            return Err(PkiError::Pem {
                path: files.ca.clone(),
                what: "certificate",
            });
        }
        let chain: Vec<_> = CertificateDer::pem_slice_iter(&read_bytes(&files.cert)?)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| PkiError::Pem {
                path: files.cert.clone(),
                what: "certificate",
            })?;
        if chain.is_empty() {
            return Err(PkiError::Pem {
                path: files.cert.clone(),
                what: "certificate",
            });
        }
        let key =
            PrivateKeyDer::from_pem_slice(&read_bytes(&files.key)?).map_err(|_| PkiError::Pem {
                path: files.key.clone(),
                what: "private key",
            })?;
        Ok(Identity {
            roots: Arc::new(roots),
            cas,
            chain,
            key,
            crls: Vec::new(),
        })
    }

    /// This party's own certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0] // `load` refuses an empty chain
    }

    /// A client config presenting this identity and trusting only the cluster CA.
    pub fn client_config(&self, alpn: &[u8]) -> Result<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(all(test, feature = "authority"))]
mod tests {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, SanType};

    use super::*;

    #[test]
    fn roles_are_read_from_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            nodes: vec!["n1".into()],
            clients: vec!["alice".into()],
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        let written = init_dir(dir.path(), &opts).expect("init");
        assert_eq!(written.len(), 6);
        let node = Identity::load(&TlsFiles::in_dir(dir.path(), "n1")).expect("node");
        let client = Identity::load(&TlsFiles::in_dir(dir.path(), "alice")).expect("client");
        assert_eq!(
            subject(node.cert()).expect("n1"),
            Subject {
                role: Role::Node,
                common_name: "n1".into()
            }
        );
        assert_eq!(node_name(node.cert()).expect("n1"), Some("n1".into()));
        assert_eq!(node_name(client.cert()).expect("alice"), None);
        assert_eq!(
            subject(client.cert()).expect("alice"),
            Subject {
                role: Role::Client,
                common_name: "alice".into()
            }
        );
        node.server_config(Role::Node, b"x").expect("server config");
        client.client_config(b"x").expect("client config");
        // A second init reuses the CA.
        let again = init_dir(
            dir.path(),
            &InitOptions {
                nodes: vec![],
                clients: vec!["bob".into()],
                hosts: vec![],
            },
        )
        .expect("again");
        assert_eq!(again.len(), 2);
    }

    /// A certificate from `ca` with exactly the given common name, key usages and node URI.
    fn custom(
        ca: &Authority,
        cn: &str,
        eku: Vec<ExtendedKeyUsagePurpose>,
        node: Option<&str>,
    ) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.extended_key_usages = eku;
        if let Some(node) = node {
            params.subject_alt_names.push(SanType::URI(
                format!("{NODE_URI_PREFIX}{node}").try_into().expect("uri"),
            ));
        }
        let issued = ca.issue(cn, params).expect("issue");
        CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem")
    }

    #[test]
    fn each_role_admits_only_certificates_fit_for_it() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let ca = Authority::generate("test CA").expect("ca");
        let client = custom(&ca, "alice", vec![ClientAuth], None);
        let node = custom(&ca, "n1", vec![ServerAuth, ClientAuth], Some("n1"));
        assert_eq!(refusal(&client, Role::Client), None);
        assert_eq!(refusal(&node, Role::Node), None);
        let refused = |cert: &CertificateDer<'_>, role, why: &str| {
            let reason = refusal(cert, role).expect("refused");
            assert!(reason.contains(why), "{reason:?} should say {why:?}");
        };
        refused(&client, Role::Node, "not a node certificate");
        refused(
            &node,
            Role::Client,
            "node certificate \"n1\" refused on the client port",
        );
        let bare = custom(&ca, "bob", vec![], None);
        refused(&bare, Role::Client, "no extended key usage");
        let bare_node = custom(&ca, "n2", vec![], Some("n2"));
        refused(&bare_node, Role::Node, "no extended key usage");
        let server_only = custom(&ca, "n3", vec![ServerAuth], Some("n3"));
        refused(&server_only, Role::Node, "both serverAuth and clientAuth");
        let server_client = custom(&ca, "carol", vec![ServerAuth], None);
        refused(&server_client, Role::Client, "do not include clientAuth");
        refused(
            &custom(&ca, "", vec![ClientAuth], None),
            Role::Client,
            "no common name",
        );
        refused(
            &custom(&ca, "reactor:audit", vec![ClientAuth], None),
            Role::Client,
            "is reserved",
        );
        let two = {
            let mut params = CertificateParams::default();
            params.extended_key_usages = vec![ServerAuth, ClientAuth];
            for n in ["n1", "n2"] {
                params.subject_alt_names.push(SanType::URI(
                    format!("{NODE_URI_PREFIX}{n}").try_into().expect("uri"),
                ));
            }
            let issued = ca.issue("n1", params).expect("issue");
            CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem")
        };
        refused(&two, Role::Node, "more than one node");
        // Escaped in messages: a name cannot forge a log line.
        let forged = custom(
            &ca,
            "eve\nINFO forged",
            vec![ServerAuth, ClientAuth],
            Some("x"),
        );
        refused(&forged, Role::Client, "\"eve\\nINFO forged\"");
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            nodes: vec![],
            clients: vec!["../evil".into()],
            hosts: vec![],
        };
        assert!(matches!(
            init_dir(dir.path(), &opts),
            Err(PkiError::Parse(_))
        ));
    }
}
