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

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName as TlsName, RootCertStore, SignatureScheme};

/// The URI prefix that marks a node certificate.
pub const NODE_URI_PREFIX: &str = "urn:etch:node:";

/// Why a certificate was refused, as rustls carries it to the handshake's error. rustls
/// shows it with `Debug`, so that prints the reason as it is (names in it are already
/// escaped), not quoted again.
struct Refused(String);

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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

/// A certificate authority able to issue node and client certificates.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A freshly issued certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Makes a new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its certificate and key files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let cert_pem = read_string(cert)?;
        let key_pem = read_string(key)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Authority { cert_pem, issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA as rcgen signs with it (certificates, revocation lists).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Issues a node certificate for `name`, valid for the given host names and IP addresses.
    pub fn issue_node(&self, name: &str, hosts: &[String]) -> Result<Issued> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params
            .subject_alt_names
            .push(SanType::URI(format!("{NODE_URI_PREFIX}{name}").try_into()?));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(name, params)
    }

    /// Issues a client certificate whose common name (the principal) is `name`.
    pub fn issue_client(&self, name: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    /// Issues a certificate for common name `name` with whatever else `params` says (key
    /// usages, names): for tests and tools that need certificates etch would not issue,
    /// such as ones it must refuse.
    pub fn issue(&self, name: &str, mut params: CertificateParams) -> Result<Issued> {
        params.distinguished_name = dn(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let year = current_year();
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The current calendar year, close enough for validity windows that start a year back.
pub(crate) fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "etch");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path`; private keys (`secret`) are readable by their owner only.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let io = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(path)
            .map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        fs::write(path, contents).map_err(io)
    }
}

/// Replaces `path` with `contents` whole: written to a file beside it, then renamed over it,
/// so that a reader (a node watching the file) never sees half of it.
pub(crate) fn write_file_atomic(path: &Path, contents: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_file(&tmp, contents, false)?;
    fs::rename(&tmp, path).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

/// What [`init_dir`] should make.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Node certificates to issue, by node name.
    pub nodes: Vec<String>,
    /// Client certificates to issue, by principal.
    pub clients: Vec<String>,
    /// Host names and IP addresses the node certificates are valid for.
    pub hosts: Vec<String>,
}

/// Writes `ca.crt`, `ca.key` and `NAME.crt` / `NAME.key` for every node and client into
/// `dir`, creating it. An existing `ca.crt` + `ca.key` in `dir` is reused, so that more
/// certificates can be added to a cluster later. Returns the paths written.
pub fn init_dir(dir: &Path, opts: &InitOptions) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let mut written = Vec::new();
    let ca = if ca_crt.exists() && ca_key.exists() {
        Authority::load(&ca_crt, &ca_key)?
    } else {
        // A name of its own, so that a certificate from another cluster's CA is reported as
        // from an unknown issuer rather than as a bad signature.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let ca = Authority::generate(&format!(
            "etch CA {:x}",
            nonce ^ u128::from(std::process::id())
        ))?;
        write_file(&ca_crt, ca.cert_pem(), false)?;
        write_file(&ca_key, &ca.key_pem(), true)?;
        written.extend([ca_crt, ca_key]);
        ca
    };
    let issued = opts
        .nodes
        .iter()
        .map(|n| Ok::<_, PkiError>((n, ca.issue_node(n, &opts.hosts)?)))
        .chain(opts.clients.iter().map(|c| Ok((c, ca.issue_client(c)?))));
    for item in issued {
        let (name, issued) = item?;
        check_file_name(name)?;
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        write_file(&crt, &issued.cert_pem, false)?;
        write_file(&key, &issued.key_pem, true)?;
        written.extend([crt, key]);
    }
    Ok(written)
}

pub(crate) fn check_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "ca"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::Parse(format!(
            "{name:?} is not a usable certificate name (letters, digits, '-', '_', '.'; not \"ca\")"
        )))
    }
}

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
    /// The CA certificates of the bundle, to check revocation lists against.
    cas: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Revocation lists the server side checks client certificates against.
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

    /// Adds the revocation lists in the PEM file `crl` (see [`crate::crl::load`]): certificates
    /// they revoke are refused by [`Identity::server_config`] and [`Identity::verifier`].
    ///
    /// # Errors
    ///
    /// The file is missing or malformed, or a list in it is not signed by a CA of the bundle.
    pub fn with_crl_file(mut self, crl: &Path) -> Result<Self> {
        self.crls = crate::crl::load(crl, &self.cas)?;
        Ok(self)
    }

    /// How many revocation lists the identity checks certificates against.
    pub fn crl_count(&self) -> usize {
        self.crls.len()
    }

    /// This party's own certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0] // `load` refuses an empty chain
    }

    /// A server config that demands a client certificate signed by the CA and fit to play
    /// `admit` ([`refusal`]): [`Role::Node`] on the peer endpoint, [`Role::Client`] on the
    /// client endpoint.
    pub fn server_config(&self, admit: Role, alpn: &[u8]) -> Result<rustls::ServerConfig> {
        let verifier = self.verifier(admit)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    /// A server config that shows this identity's certificate and asks the client for
    /// none: the metrics and health listener over HTTPS (`etchd --listen-metrics
    /// https://...`), which Prometheus and probes reach without client certificates.
    pub fn server_config_without_client_auth(&self) -> Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The verifier [`Identity::server_config`] checks certificates that would play `admit`
    /// with: signed by a CA of the bundle, not revoked by a list, fit for the role
    /// ([`refusal`]). [`recheck`] asks it again about a connection already open.
    ///
    /// Revocation is checked for the certificate itself (etch issues no intermediates), and
    /// a certificate of a CA that has no list is not revoked: with a bundle of an old and a
    /// new CA during a rotation, the old CA's list must not lock out the new CA's
    /// certificates. Lists are not refused once past their nextUpdate: a node keeps the
    /// last list it was given rather than lock out every client.
    pub fn verifier(&self, admit: Role) -> Result<Arc<dyn ClientCertVerifier>> {
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.iter().cloned())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let inner = builder.build()?;
        Ok(Arc::new(RoleVerifier { inner, admit }))
    }

    /// Whether this identity's own certificate is signed by a CA of its bundle and fit to be
    /// a node (revocation aside): a node must not take on a certificate its peers, which
    /// share the bundle, would refuse.
    pub fn check_own(&self, role: Role) -> std::result::Result<(), String> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
        recheck(&RoleVerifier { inner, admit: role }, &self.chain)
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

/// Asks `verifier` again about the certificate chain `chain` (end entity first) of a
/// connection already open: `Err` with the reason when it would be refused now (revoked
/// since, its CA taken out of the bundle, expired).
pub fn recheck(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
) -> std::result::Result<(), String> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("no certificate".into());
    };
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => {
                "the certificate has been revoked".to_owned()
            }
            e => e.to_string(),
        })
}

/// What a certificate says of its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub role: Role,
    /// The common name: a client's principal, or a node's name.
    pub common_name: String,
}

/// Reads the role and common name from a DER certificate.
pub fn subject(cert: &CertificateDer<'_>) -> Result<Subject> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let common_name = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let is_node = x509
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?
        .is_some_and(|san| {
            san.value.general_names.iter().any(|name| {
                matches!(name, x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(NODE_URI_PREFIX))
            })
        });
    Ok(Subject {
        role: if is_node { Role::Node } else { Role::Client },
        common_name,
    })
}

/// The node name a node certificate was issued for (its `urn:etch:node:NAME` URI), or `None`
/// for a certificate that names no node.
///
/// # Errors
///
/// A certificate that does not parse.
pub fn node_name(cert: &CertificateDer<'_>) -> Result<Option<String>> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut names = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(NODE_URI_PREFIX),
            _ => None,
        });
    match (names.next(), names.next()) {
        (Some(name), None) => Ok(Some(name.to_owned())),
        (None, _) => Ok(None),
        // Two node names in one certificate: it could speak for either; it speaks for none.
        (Some(_), Some(_)) => Err(PkiError::Parse(
            "the certificate names more than one node".into(),
        )),
    }
}

/// Principals etch uses for itself: a client certificate whose common name starts with one
/// of these is refused, so nobody can speak as a reactor (`reactor:NAME`).
pub const RESERVED_PRINCIPAL_PREFIXES: &[&str] = &["reactor:", "etch:"];

/// Why a CA-signed certificate may not play a role, as the refusal (and the log) says it.
pub fn refusal(cert: &CertificateDer<'_>, role: Role) -> Option<String> {
    let (_, x509) = match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("unreadable certificate: {e}")),
    };
    let eku = match x509.extended_key_usage() {
        Ok(Some(eku)) => eku.value.clone(),
        Ok(None) => return Some("the certificate has no extended key usage".into()),
        Err(e) => return Some(format!("unreadable extended key usage: {e}")),
    };
    let subject = match subject(cert) {
        Ok(subject) => subject,
        Err(e) => return Some(e.to_string()),
    };
    match role {
        Role::Node => {
            if subject.role != Role::Node {
                return Some(format!(
                    "{} is not a node certificate (no {NODE_URI_PREFIX} URI)",
                    escaped(&subject.common_name)
                ));
            }
            if let Err(e) = node_name(cert) {
                return Some(e.to_string());
            }
            if !(eku.server_auth && eku.client_auth) {
                return Some(
                    "a node certificate needs both serverAuth and clientAuth key usages".into(),
                );
            }
        }
        Role::Client => {
            let cn = &subject.common_name;
            if subject.role == Role::Node {
                return Some(format!(
                    "node certificate {} refused on the client port: clients use client certificates",
                    escaped(cn)
                ));
            }
            if !eku.client_auth {
                return Some("the certificate's key usages do not include clientAuth".into());
            }
            if cn.is_empty() {
                return Some("the certificate has no common name (the user it speaks for)".into());
            }
            if let Some(prefix) = (RESERVED_PRINCIPAL_PREFIXES.iter()).find(|p| cn.starts_with(**p))
            {
                return Some(format!(
                    "common name {} is reserved ({prefix}... names etch's own principals)",
                    escaped(cn)
                ));
            }
        }
    }
    None
}

/// A principal or name from a certificate, quoted and escaped for a log line or a message
/// (control characters and quotes cannot forge a line or a field).
pub fn escaped(name: &str) -> String {
    format!("{name:?}")
}

/// Checks the CA chain with webpki, then that the certificate may play the admitted role
/// ([`refusal`]).
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    admit: Role,
}

impl ClientCertVerifier for RoleVerifier {
    fn root_hint_subjects(&self) -> &[TlsName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(reason) = refusal(end_entity, self.admit) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(Refused(reason)))),
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
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
