//! TLS material for the exporter: the CA bundle and the client identity,
//! read from PEM files, checked with errors that name the file and the
//! problem, and re-read when the files change (certificate rotation without
//! a restart).
//!
//! Trust: with a CA file, only its certificates are trusted (a private CA);
//! without one, the Mozilla roots compiled into the binary (webpki-roots),
//! because the image is `FROM scratch` and has no /etc/ssl. To trust the
//! host's store instead, point `OTEL_EXPORTER_OTLP_CERTIFICATE` at it (e.g.
//! /etc/ssl/certs/ca-certificates.crt mounted read-only).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest PEM file read (a system bundle is about 200 KiB).
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// Where the TLS material comes from; all optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates that verify the collector (replace the built-in roots).
    pub ca: Option<PathBuf>,
    /// Client certificate chain for mTLS, leaf first.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
}

/// What was read: PEM text as the transports take it, already checked.
#[derive(Clone, Debug, Default)]
pub struct Material {
    pub ca_pem: Option<Vec<u8>>,
    /// (certificate chain, key), both PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A file's identity and version: a rotation replaces the file (new inode)
/// or rewrites it (new mtime or length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.ca
            .iter()
            .chain(&self.client_cert)
            .chain(&self.client_key)
    }

    /// Reads and checks every file. The error names the file.
    pub fn load(&self) -> Result<Material, String> {
        let ca_pem = match &self.ca {
            Some(path) => {
                let text = read(path)?;
                certificates(path, &text)?;
                Some(text)
            }
            None => None,
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read(cert)?;
                let leaf = certificates(cert, &chain)?.remove(0);
                check_validity(cert, &leaf, SystemTime::now())?;
                let key_text = read(key)?;
                private_key(key, &key_text)?;
                Some((chain, key_text))
            }
            (None, None) => None,
            (Some(cert), None) => {
                return Err(format!(
                    "client certificate {} given without a client key",
                    cert.display()
                ))
            }
            (None, Some(key)) => {
                return Err(format!(
                    "client key {} given without a client certificate",
                    key.display()
                ))
            }
        };
        Ok(Material { ca_pem, identity })
    }

    /// The files' current stamps (a missing file has none), to notice change.
    pub fn stamps(&self) -> Vec<Option<Stamp>> {
        use std::os::unix::fs::MetadataExt as _;
        self.paths()
            .map(|p| {
                fs::metadata(p).ok().map(|m| Stamp {
                    modified: m.modified().ok(),
                    len: m.len(),
                    ino: m.ino(),
                })
            })
            .collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.display();
    let meta = fs::metadata(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cannot read {name}: not a regular file"));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{name} is {} bytes, more than a PEM file can sensibly be ({MAX_PEM_BYTES})",
            meta.len()
        ));
    }
    fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))
}

/// Every CERTIFICATE section of a PEM file; at least one.
pub fn certificates(path: &Path, text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let name = path.display();
    let mut certs = Vec::new();
    let mut sections = 0;
    for item in pem::PemObject::pem_slice_iter(text) {
        let item: Result<(SectionKind, Vec<u8>), pem::Error> = item;
        match item {
            Ok((SectionKind::Certificate, der)) => {
                sections += 1;
                certs.push(CertificateDer::from(der));
            }
            Ok(_) => sections += 1,
            Err(e) => return Err(format!("{name} is not valid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(if sections == 0 {
            format!("{name} is not PEM: no -----BEGIN CERTIFICATE----- section")
        } else {
            format!("{name} holds no CERTIFICATE section (a key or other PEM only)")
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path, text: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let name = path.display();
    PrivateKeyDer::from_pem_slice(text).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("{name} holds no private key (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)")
        }
        e => format!("{name} is not a valid PEM private key: {e}"),
    })
}

/// Refuses a certificate that is expired or not yet valid: the server would
/// refuse it at every handshake, and the date says why.
pub fn check_validity(path: &Path, cert: &[u8], now: SystemTime) -> Result<(), String> {
    let name = path.display();
    let Some((not_before, not_after)) = validity(cert) else {
        return Err(format!(
            "{name}: the first certificate is not a parsable X.509 certificate"
        ));
    };
    let fmt = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    if now > not_after {
        return Err(format!(
            "{name}: certificate expired at {} (now {})",
            fmt(not_after),
            fmt(now)
        ));
    }
    if now < not_before {
        return Err(format!(
            "{name}: certificate is not valid before {} (now {})",
            fmt(not_before),
            fmt(now)
        ));
    }
    Ok(())
}

/// One DER TLV: (tag, content, rest).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// notBefore and notAfter of an X.509 certificate (RFC 5280 4.1).
fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, v1, r) = tlv(validity)?;
    let (t2, v2, _) = tlv(r)?;
    Some((asn1_time(t1, v1)?, asn1_time(t2, v2)?))
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ).
fn asn1_time(tag: u8, v: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest.get(r)?.parse::<u32>().ok();
    let (month, day) = (num(0..2)?, num(2..4)?);
    let (h, m, sec) = (num(4..6)?, num(6..8)?, num(8..10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = super::client::days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + sec);
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Adds what the TLS error means to rustls's terse text, for the log.
pub fn explain(message: &str) -> Option<&'static str> {
    let m = message;
    if m.contains("UnknownIssuer") || m.contains("unknown issuer") {
        Some("the collector's certificate is not signed by a trusted CA (set OTEL_EXPORTER_OTLP_CERTIFICATE to the CA that signed it)")
    } else if m.contains("NotValidForName") || m.contains("not valid for name") {
        Some("the collector's certificate does not name the endpoint's host (name mismatch)")
    } else if m.contains("Expired") || m.contains("expired") {
        Some("a certificate in the handshake has expired")
    } else if m.contains("CertificateRequired")
        || m.contains("certificate required")
        || m.contains("HandshakeFailure")
    {
        Some("the collector requires a client certificate (set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)")
    } else if m.contains("UnknownCA") || m.contains("unknown ca") {
        Some("the collector does not trust the client certificate's CA")
    } else if m.contains("BadCertificate") || m.contains("bad certificate") {
        Some("the collector refused the client certificate")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times_parse() {
        let t = asn1_time(0x17, b"260101000000Z").unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(t).to_string(),
            "2026-01-01T00:00:00Z"
        );
        let t = asn1_time(0x18, b"19991231235959Z").unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(t).to_string(),
            "1999-12-31T23:59:59Z"
        );
        assert!(asn1_time(0x17, b"261301000000Z").is_none());
        assert!(asn1_time(0x17, b"2601010000Z").is_none());
    }

    #[test]
    fn non_pem_and_keyless_files_are_named() {
        let p = Path::new("/x/ca.pem");
        let e = certificates(p, b"hello").unwrap_err();
        assert!(e.contains("/x/ca.pem is not PEM"), "{e}");
        let e = private_key(
            p,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(e.contains("no private key"), "{e}");
        assert!(validity(b"\x30\x03\x02\x01\x00").is_none());
        assert!(tlv(b"\x30\x85\x01\x01\x01\x01\x01").is_none());
    }
}
