//! Certificates: making them (`rangedb cert`, with rcgen) and checking
//! them before a node or the CLI uses them (with x509-parser), so a bad
//! file is one clear line at start instead of a failed handshake later.
//!
//! One directory holds a cluster's certificates (`crate::tls` names the
//! files). The CA's key signs the others; it is written next to them unless
//! `--ca-key` puts it elsewhere (keep it off the nodes in production).
//! Invariants: keys are written with mode 0600 and the directory is created
//! 0700; nothing is overwritten without `overwrite`; a node or client
//! certificate never outlives the CA that signed it. Production edge only
//! (`cfg(not(madsim))`): it reads the real clock and the OS RNG.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::peer::{PeerIdentity, NODE_COMMON_NAME};
use crate::error::{Error, Result};
use crate::tls::{self, TlsMaterial};

/// Default lifetimes, in days (CockroachDB's: a CA for 10 years, the
/// certificates it signs for 5).
pub const CA_LIFETIME_DAYS: u32 = 3650;
pub const CERT_LIFETIME_DAYS: u32 = 1825;
/// The CA key's default file name (in the certificates directory).
pub const CA_KEY: &str = "ca.key";
/// Certificates start this long before they are made, so a node whose
/// clock runs behind still accepts them.
const BACKDATE: Duration = Duration::hours(1);

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    /// The CA key's path (default `<dir>/ca.key`).
    pub ca_key: Option<PathBuf>,
    pub lifetime_days: u32,
    pub overwrite: bool,
}

impl Target {
    fn ca_key_path(&self) -> PathBuf {
        self.ca_key.clone().unwrap_or_else(|| self.dir.join(CA_KEY))
    }
}

fn cert_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

fn org(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "RangeDB");
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    if days == 0 {
        return Err(Error::Config("--lifetime-days must be at least 1".into()));
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(days as i64);
    Ok(())
}

/// Creates the CA: `ca.crt` and its key. Returns the files written.
pub fn create_ca(t: &Target) -> Result<Vec<PathBuf>> {
    let (crt, key) = (t.dir.join(tls::CA_CERT), t.ca_key_path());
    refuse_overwrite(t, &[&crt, &key])?;
    let mut params = CertificateParams::default();
    params.distinguished_name = org("RangeDB CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, t.lifetime_days)?;
    let key_pair = KeyPair::generate().map_err(|e| cert_err("cannot make a key", e))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| cert_err("cannot sign the CA certificate", e))?;
    make_dir(&t.dir)?;
    write_file(&key, key_pair.serialize_pem().as_bytes(), true)?;
    write_file(&crt, cert.pem().as_bytes(), false)?;
    Ok(vec![crt, key])
}

/// Creates `node.crt`/`node.key` for a node reachable at `hosts` (DNS
/// names or IP addresses, every one a client or peer may dial).
pub fn create_node(t: &Target, hosts: &[String]) -> Result<Vec<PathBuf>> {
    if hosts.is_empty() {
        return Err(Error::Config(
            "name every host the node is reached at, e.g. `rangedb cert create-node localhost 127.0.0.1`"
                .into(),
        ));
    }
    for h in hosts {
        if h.is_empty() || (h.contains(':') && h.parse::<std::net::IpAddr>().is_err()) {
            return Err(Error::Config(format!(
                "{h:?} is not a host name or IP address (give hosts without ports)"
            )));
        }
    }
    let mut params =
        CertificateParams::new(hosts.to_vec()).map_err(|e| cert_err("bad host name", e))?;
    params.distinguished_name = org(NODE_COMMON_NAME);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let files = (t.dir.join(tls::NODE_CERT), t.dir.join(tls::NODE_KEY));
    sign_leaf(t, params, files)
}

/// Creates `client.<user>.crt`/`.key`: the user's client identity.
pub fn create_client(t: &Target, user: &str) -> Result<Vec<PathBuf>> {
    check_user_name(user)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = org(user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let files = (
        t.dir.join(tls::client_cert_file(user)),
        t.dir.join(tls::client_key_file(user)),
    );
    sign_leaf(t, params, files)
}

/// User names: letters, digits, `_`, `-`, `.`; at most 63 bytes; not the
/// node certificates' name.
pub fn check_user_name(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= 63
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && !user.starts_with('.');
    if !ok {
        return Err(Error::Config(format!(
            "{user:?} is not a user name (letters, digits, '_', '-', '.'; at most 63)"
        )));
    }
    if user == NODE_COMMON_NAME {
        return Err(Error::Config(format!(
            "{user:?} is reserved for node certificates"
        )));
    }
    Ok(())
}

fn sign_leaf(
    t: &Target,
    mut params: CertificateParams,
    (crt, key): (PathBuf, PathBuf),
) -> Result<Vec<PathBuf>> {
    refuse_overwrite(t, &[&crt, &key])?;
    let ca_crt = t.dir.join(tls::CA_CERT);
    let ca_pem = read_text(&ca_crt, "rangedb cert create-ca")?;
    let ca_key_path = t.ca_key_path();
    let ca_key = read_text(&ca_key_path, "rangedb cert create-ca")?;
    let ca_key = KeyPair::from_pem(&ca_key)
        .map_err(|e| cert_err(&format!("{} is not a key", ca_key_path.display()), e))?;
    let ca = parse_pem(ca_pem.as_bytes(), &ca_crt)?;
    let ca_cert = ca.parse(&ca_crt)?;
    if ca_cert.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        return Err(Error::Config(format!(
            "{} is not the key of {}",
            ca_key_path.display(),
            ca_crt.display()
        )));
    }
    validity(&mut params, t.lifetime_days)?;
    // Never outlive the CA.
    let ca_end = OffsetDateTime::from_unix_timestamp(ca_cert.validity().not_after.timestamp())
        .map_err(|e| cert_err("the CA's expiry", e))?;
    if params.not_after > ca_end {
        params.not_after = ca_end;
    }
    if ca_end <= OffsetDateTime::now_utc() {
        return Err(Error::Config(format!(
            "the CA {} expired on {}",
            ca_crt.display(),
            ca_end.date()
        )));
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| cert_err(&format!("{} is not a CA certificate", ca_crt.display()), e))?;
    let key_pair = KeyPair::generate().map_err(|e| cert_err("cannot make a key", e))?;
    let cert = params
        .signed_by(&key_pair, &issuer)
        .map_err(|e| cert_err("cannot sign the certificate", e))?;
    write_file(&key, key_pair.serialize_pem().as_bytes(), true)?;
    write_file(&crt, cert.pem().as_bytes(), false)?;
    Ok(vec![crt, key])
}

fn refuse_overwrite(t: &Target, files: &[&Path]) -> Result<()> {
    if t.overwrite {
        return Ok(());
    }
    match files.iter().find(|f| f.exists()) {
        Some(f) => Err(Error::Config(format!(
            "{} exists; give --overwrite to replace it",
            f.display()
        ))),
        None => Ok(()),
    }
}

fn read_text(path: &Path, hint: &str) -> Result<String> {
    let bytes = tls::read_file(path).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{m} (create it with `{hint}`)")),
        e => e,
    })?;
    String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{} is not a PEM file", path.display())))
}

fn make_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Config(format!("cannot restrict {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Writes a file whole (a key with mode 0600), replacing any old one.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        make_dir(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mode = if secret { 0o600 } else { 0o644 };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}

/// One PEM block, kept so certificates can borrow from it.
struct OwnedPem(x509_parser::pem::Pem);

fn parse_pem(bytes: &[u8], path: &Path) -> Result<OwnedPem> {
    x509_parser::pem::parse_x509_pem(bytes)
        .map(|(_, p)| OwnedPem(p))
        .map_err(|e| Error::Config(format!("{} is not a PEM certificate: {e}", path.display())))
}

impl OwnedPem {
    fn parse(&self, path: &Path) -> Result<X509Certificate<'_>> {
        self.0
            .parse_x509()
            .map_err(|e| Error::Config(format!("{} is not a certificate: {e}", path.display())))
    }
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub file: String,
    /// `ca`, `node` or `client`.
    pub kind: &'static str,
    pub common_name: String,
    /// DNS names and IP addresses (node certificates).
    pub hosts: Vec<String>,
    /// Expiry, `YYYY-MM-DD`.
    pub expires: String,
    pub expired: bool,
}

impl CertInfo {
    /// The identity a peer presenting this certificate has.
    pub fn identity(&self) -> PeerIdentity {
        match self.kind {
            "node" => PeerIdentity::Node {
                hosts: self.hosts.clone(),
            },
            _ => PeerIdentity::User(self.common_name.clone()),
        }
    }
}

/// Reads a certificate (DER) into `CertInfo`.
pub fn inspect_der(der: &[u8], file: &str) -> Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Config(format!("{file} is not a certificate: {e}")))?;
    Ok(info(&cert, file))
}

fn info(cert: &X509Certificate<'_>, file: &str) -> CertInfo {
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => hosts.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        hosts.push(std::net::IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        hosts.push(std::net::IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let kind = if cert.is_ca() {
        "ca"
    } else if common_name == NODE_COMMON_NAME {
        "node"
    } else {
        "client"
    };
    let end = cert.validity().not_after.timestamp();
    CertInfo {
        file: file.to_string(),
        kind,
        common_name,
        hosts,
        expires: OffsetDateTime::from_unix_timestamp(end)
            .map(|t| t.date().to_string())
            .unwrap_or_else(|_| "?".into()),
        expired: !cert.validity().is_valid(),
    }
}

/// Checks material before use: every file parses, the certificate is of
/// the expected kind (`node` or `client`), in its validity period, signed
/// by `ca.crt`, and the key is its key. Returns what it says.
pub fn check(m: &TlsMaterial, kind: &str) -> Result<CertInfo> {
    let src = Path::new(&m.source);
    let dir = src.parent().unwrap_or(Path::new("."));
    let ca_path = dir.join(tls::CA_CERT);
    let ca_pem = parse_pem(&m.ca_pem, &ca_path)?;
    let ca = ca_pem.parse(&ca_path)?;
    let ca_info = info(&ca, &ca_path.display().to_string());
    if !ca.is_ca() {
        return Err(Error::Config(format!(
            "{} is not a CA certificate",
            ca_path.display()
        )));
    }
    if ca_info.expired {
        return Err(Error::Config(format!(
            "the CA certificate {} is not valid now (expires {})",
            ca_path.display(),
            ca_info.expires
        )));
    }
    let pem = parse_pem(&m.cert_pem, src)?;
    let cert = pem.parse(src)?;
    let got = info(&cert, &m.source);
    if got.kind != kind {
        return Err(Error::Config(format!(
            "{} is a {} certificate, not a {kind} certificate",
            m.source, got.kind
        )));
    }
    if got.expired {
        return Err(Error::Config(format!(
            "{} is not valid now: it expires {} (or is not yet valid); make a new one with `rangedb cert`",
            m.source, got.expires
        )));
    }
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(Error::Config(format!(
            "{} was not signed by {} (certificates of another cluster?)",
            m.source,
            ca_path.display()
        )));
    }
    let key_text = std::str::from_utf8(&m.key_pem)
        .map_err(|_| Error::Config(format!("the key of {} is not PEM", m.source)))?;
    let key = KeyPair::from_pem(key_text)
        .map_err(|e| Error::Config(format!("the key of {} does not parse: {e}", m.source)))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(Error::Config(format!(
            "the key next to {} is not this certificate's key",
            m.source
        )));
    }
    Ok(got)
}

/// Every certificate in `dir`, for `rangedb cert list`.
pub fn list(dir: &Path) -> Result<Vec<CertInfo>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", dir.display())))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let bytes = tls::read_file(&p)?;
        let pem = parse_pem(&bytes, &p)?;
        let cert = pem.parse(&p)?;
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        out.push(info(&cert, &name.unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
