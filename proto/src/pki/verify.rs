//! What a node checks of the certificates it is shown: roles, revocation, server configs
//! (only with the `authority` feature: a client checks nothing but the CA's signature).

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName as TlsName, SignatureScheme};

use super::*;

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

impl Identity {
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
