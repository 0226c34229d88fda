//! The rustls client for each libpq TLS mode.

use crate::dsn::{Dsn, RootCerts, TlsMode};
use crate::error::Error;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Builds the TLS connector for a DSN whose mode is not `disable`.
pub(crate) fn connector(dsn: &Dsn) -> Result<MakeRustlsConnect, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(format!("TLS setup failed: {err}")))?;
    let roots = match (dsn.tls, &dsn.root_certs) {
        (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => Some(load_roots(&default_root_file()?)?),
        // libpq checks the chain in `require` mode when a root certificate
        // is given explicitly.
        (TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull, Some(source)) => {
            Some(load_roots(source)?)
        }
        _ => None,
    };
    let config = match roots {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        Some((roots, given)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| tls_error(format!("TLS setup failed: {err}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    webpki,
                    check_name: dsn.tls == TlsMode::VerifyFull,
                    given,
                }))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn tls_error(message: String) -> Error {
    Error::Config {
        origin: "sslrootcert".into(),
        message,
    }
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`.
fn default_root_file() -> Result<RootCerts, Error> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = home.join(".postgresql/root.crt");
    if path.exists() {
        Ok(RootCerts::File(path))
    } else {
        Err(tls_error(format!(
            "sslmode verify-ca and verify-full need a root certificate: add \
             sslrootcert=/path/to/ca.pem (or sslrootcert=system) to the DSN, or put it at {}",
            path.display()
        )))
    }
}

/// The trusted roots, and the certificates of a root file as given (the
/// server's own among them when it is self-signed).
fn load_roots(source: &RootCerts) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), Error> {
    let mut store = RootCertStore::empty();
    match source {
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(tls_error(
                    "sslrootcert=system, but no system root certificates were found".into(),
                ));
            }
            Ok((store, Vec::new()))
        }
        RootCerts::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|err| {
                    tls_error(format!(
                        "cannot read root certificates from {}: {err}",
                        path.display()
                    ))
                })?;
            let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(tls_error(format!(
                    "{} holds no usable PEM certificate",
                    path.display()
                )));
            }
            Ok((store, certs))
        }
    }
}

/// `prefer` / `require`: encryption without authentication, as in libpq.
/// Handshake signatures are still checked, so the session key belongs to
/// whoever holds the presented certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// `verify-full`, `verify-ca`, and `require` with a root certificate: the
/// chain must lead to a trusted root; the name must match in `verify-full`
/// only.
///
/// A self-signed server certificate given as the root certificate is
/// accepted too, as libpq accepts it. webpki refuses it when it is a CA
/// certificate (`openssl req -x509` makes them so) with CaUsedAsEndEntity:
/// it takes a trust anchor for an issuer, never for the end entity itself.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
    /// The certificates of the root file, as given.
    given: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let Err(rustls::Error::InvalidCertificate(error)) = &result else {
            return result;
        };
        match error {
            // webpki checks the name last, so the chain is good.
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            CertificateError::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                if self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    given::check(end_entity, self.check_name.then_some(server_name), now)?;
                    Ok(ServerCertVerified::assertion())
                } else if self_issued(end_entity) {
                    // As for any other certificate whose issuer is not trusted.
                    Err(CertificateError::UnknownIssuer.into())
                } else {
                    result
                }
            }
            _ => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Issuer and subject are the same: a self-signed certificate.
fn self_issued(der: &CertificateDer<'_>) -> bool {
    webpki::EndEntityCert::try_from(der).is_ok_and(|cert| cert.issuer() == cert.subject())
}

/// The checks of a server certificate that is itself a given root
/// certificate, byte for byte: nothing signs it but the user's trust.
mod given {
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::ParsedCertificate;
    use rustls::{CertificateError, Error};
    use x509_cert::TbsCertificate;
    use x509_cert::der::Decode;
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    use x509_cert::der::oid::db::{rfc4519, rfc5280};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

    /// What webpki would have checked after finding the certificate to be a
    /// CA: its validity (already checked by then, since webpki checks it
    /// first, but webpki's order is no promise), its extended key usage,
    /// and for `verify-full` the name.
    pub(super) fn check(
        der: &CertificateDer<'_>,
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<(), Error> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|_| Error::from(CertificateError::BadEncoding))?;
        let tbs = &cert.tbs_certificate;
        validity(tbs, now)?;
        match tbs.get::<ExtendedKeyUsage>() {
            Ok(None) => {}
            Ok(Some((_, usage))) if usage.0.contains(&rfc5280::ID_KP_SERVER_AUTH) => {}
            Ok(Some(_)) => return Err(CertificateError::InvalidPurpose.into()),
            Err(_) => return Err(CertificateError::BadEncoding.into()),
        }
        match server_name {
            Some(name) => self::name(der, tbs, name),
            None => Ok(()),
        }
    }

    pub(super) fn validity(tbs: &TbsCertificate, now: UnixTime) -> Result<(), Error> {
        let at = |time: x509_cert::time::Time| UnixTime::since_unix_epoch(time.to_unix_duration());
        let (not_before, not_after) = (at(tbs.validity.not_before), at(tbs.validity.not_after));
        if now < not_before {
            Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into())
        } else if now > not_after {
            Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into())
        } else {
            Ok(())
        }
    }

    /// The subject alternative names, as webpki checks them for any
    /// certificate; then, as libpq does, the common name when the
    /// certificate has no alternative name of the host's kind (DNS name or
    /// IP address).
    pub(super) fn name(
        der: &CertificateDer<'_>,
        tbs: &TbsCertificate,
        server_name: &ServerName<'_>,
    ) -> Result<(), Error> {
        let Err(mismatch) =
            rustls::client::verify_server_name(&ParsedCertificate::try_from(der)?, server_name)
        else {
            return Ok(());
        };
        let Some(common_name) = common_name(tbs) else {
            return Err(mismatch);
        };
        let alt_names = match tbs.get::<SubjectAltName>() {
            Ok(found) => found.map(|(_, names)| names.0).unwrap_or_default(),
            Err(_) => return Err(CertificateError::BadEncoding.into()),
        };
        let (has_kind, matches) = match server_name {
            ServerName::DnsName(host) => (
                alt_names
                    .iter()
                    .any(|n| matches!(n, GeneralName::DnsName(_))),
                common_name_matches(&common_name, host.as_ref()),
            ),
            ServerName::IpAddress(ip) => (
                alt_names
                    .iter()
                    .any(|n| matches!(n, GeneralName::IpAddress(_))),
                common_name == std::net::IpAddr::from(*ip).to_string(),
            ),
            _ => return Err(mismatch),
        };
        if has_kind {
            return Err(mismatch);
        }
        if matches {
            return Ok(());
        }
        let mut presented = match mismatch {
            Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            }) => presented,
            _ => Vec::new(),
        };
        presented.push(format!("CommonName({common_name:?})"));
        Err(CertificateError::NotValidForNameContext {
            expected: server_name.to_owned(),
            presented,
        }
        .into())
    }

    /// The first common name of the subject, as libpq takes it.
    fn common_name(tbs: &TbsCertificate) -> Option<String> {
        let value = &tbs
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|attribute| attribute.oid == rfc4519::CN)?
            .value;
        let text = value
            .decode_as::<Utf8StringRef<'_>>()
            .map(|s| s.as_str().to_owned())
            .or_else(|_| {
                value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
            })
            .or_else(|_| {
                value
                    .decode_as::<Ia5StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
            })
            .ok()?;
        Some(text)
    }

    /// libpq's comparison: case-insensitive, and a leading `*.` stands for
    /// exactly one label.
    fn common_name_matches(common_name: &str, host: &str) -> bool {
        match common_name.strip_prefix("*.") {
            Some(suffix) => host.split_once('.').is_some_and(|(label, rest)| {
                !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }),
            None => common_name.eq_ignore_ascii_case(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::der::Decode;

    // Self-signed, as `openssl req -x509 -newkey ec -pkeyopt
    // ec_paramgen_curve:prime256v1 -days 36500 -subj /CN=... [-addext ...]`
    // makes them: CA certificates, valid from 2026-12-01 for 100 years.
    /// CN=localhost, no other name.
    const CN_ONLY: &str = include_str!("testdata/cn-only.crt");
    /// CN=*.example.com, no other name.
    const WILDCARD: &str = include_str!("testdata/wildcard.crt");
    /// CN=localhost, subjectAltName=DNS:localhost, extendedKeyUsage=clientAuth.
    const CLIENT_ONLY: &str = include_str!("testdata/client-only.crt");
    /// CN=localhost, subjectAltName=IP:127.0.0.1.
    const IP_SAN: &str = include_str!("testdata/ip-san.crt");
    /// CN=localhost, subjectAltName=DNS:db.example.com.
    const DNS_SAN: &str = include_str!("testdata/dns-san.crt");

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A second after the certificate's validity begins, or before it.
    fn at(cert: &CertificateDer<'_>, offset: i64) -> UnixTime {
        let cert = x509_cert::Certificate::from_der(cert).unwrap();
        let start = cert.tbs_certificate.validity.not_before.to_unix_duration();
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            start.as_secs().checked_add_signed(offset).unwrap(),
        ))
    }

    fn name(text: &str) -> ServerName<'static> {
        ServerName::try_from(text.to_owned()).unwrap()
    }

    /// The verifier `connector` builds for a root file holding `roots`.
    fn verifier(roots: &[&str], check_name: bool) -> Verifier {
        let given: Vec<_> = roots.iter().map(|pem| der(pem)).collect();
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(given.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Verifier {
            webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .unwrap(),
            check_name,
            given,
        }
    }

    fn verify(verifier: &Verifier, pem: &str, host: &str) -> Result<(), rustls::Error> {
        let cert = der(pem);
        verifier
            .verify_server_cert(&cert, &[], &name(host), &[], at(&cert, 1))
            .map(drop)
    }

    #[test]
    fn a_given_self_signed_certificate_is_its_own_root() {
        let full = verifier(&[IP_SAN, CN_ONLY], true);
        verify(&full, CN_ONLY, "localhost").unwrap();
        verify(&full, IP_SAN, "127.0.0.1").unwrap();
        assert!(matches!(
            verify(&full, CN_ONLY, "127.0.0.1"),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForNameContext { .. }
            ))
        ));
        // Not among the given certificates.
        assert_eq!(
            verify(&full, WILDCARD, "db.example.com"),
            Err(CertificateError::UnknownIssuer.into())
        );
        let chain_only = verifier(&[CN_ONLY], false);
        verify(&chain_only, CN_ONLY, "127.0.0.1").unwrap();
        verify(&chain_only, CN_ONLY, "elsewhere.example.com").unwrap();
        assert_eq!(
            verify(&chain_only, IP_SAN, "127.0.0.1"),
            Err(CertificateError::UnknownIssuer.into())
        );
    }

    #[test]
    fn validity_is_checked() {
        let cert = der(CN_ONLY);
        let parsed = x509_cert::Certificate::from_der(&cert).unwrap();
        given::validity(&parsed.tbs_certificate, at(&cert, 1)).unwrap();
        assert!(matches!(
            given::validity(&parsed.tbs_certificate, at(&cert, -1)),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYetContext { .. }
            ))
        ));
        let century = 100 * 366 * 24 * 60 * 60;
        assert!(matches!(
            given::validity(&parsed.tbs_certificate, at(&cert, century)),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. }
            ))
        ));
    }

    #[test]
    fn a_certificate_for_clients_only_is_refused() {
        let cert = der(CLIENT_ONLY);
        assert_eq!(
            given::check(&cert, Some(&name("localhost")), at(&cert, 1)),
            Err(CertificateError::InvalidPurpose.into())
        );
        given::check(&der(CN_ONLY), None, at(&cert, 1)).unwrap();
    }

    #[test]
    fn the_common_name_counts_without_an_alternative_name_of_the_kind() {
        let check = |pem: &str, host: &str| {
            let cert = der(pem);
            given::check(&cert, Some(&name(host)), at(&cert, 1)).is_ok()
        };
        assert!(check(CN_ONLY, "localhost"));
        assert!(check(CN_ONLY, "LocalHost"));
        assert!(!check(CN_ONLY, "127.0.0.1"));
        assert!(!check(CN_ONLY, "localhost.example.com"));
        assert!(check(WILDCARD, "db.example.com"));
        assert!(check(WILDCARD, "DB.Example.COM"));
        assert!(!check(WILDCARD, "example.com"));
        assert!(!check(WILDCARD, "a.db.example.com"));
        // An IP address name only: the common name still counts for a DNS
        // name, as in libpq, but not for another address.
        assert!(check(IP_SAN, "127.0.0.1"));
        assert!(check(IP_SAN, "localhost"));
        assert!(!check(IP_SAN, "127.0.0.2"));
        // A DNS name: the common name no longer counts for DNS names.
        assert!(check(DNS_SAN, "db.example.com"));
        assert!(!check(DNS_SAN, "localhost"));
    }
}
