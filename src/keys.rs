//! CURVE keys in the certificate files czmq and pyzmq use: `NAME.key` holds
//! a public key, `NAME.key_secret` the public and the secret one.
//!
//! The format is ZPL text: `#` comment lines, unindented section names
//! (`metadata`, `curve`) and indented `name = value` lines under them; the
//! keys are `public-key` and `secret-key` under `curve`, in Z85 (40
//! characters for 32 bytes), quoted. Only this two-level shape is read
//! (czmq, pyzmq and [`write_certificates`] write nothing deeper).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod parse;
#[cfg(test)]
mod tests;

/// A CURVE key pair as a certificate holds it: the public key, and the
/// secret one when the file is a `NAME.key_secret`. Raw bytes, ready for
/// `set_curve_publickey` / `set_curve_secretkey` / `set_curve_serverkey`.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The public key.
    pub public: [u8; 32],
    /// The secret key, if the certificate holds it.
    pub secret: Option<[u8; 32]>,
}

/// Written so that a logged pair never shows its secret.
impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public_z85())
            .field("secret", &self.secret.map(|_| "<hidden>"))
            .finish()
    }
}

impl Keypair {
    /// A fresh pair from libzmq (libsodium's random source).
    pub fn generate() -> Result<Keypair> {
        let pair = zmq::CurveKeyPair::new().map_err(Error::zmq("generating a CURVE key pair"))?;
        Ok(Keypair { public: pair.public_key, secret: Some(pair.secret_key) })
    }

    /// The public key in Z85, as certificates and `zmq_curve_keypair` show it.
    pub fn public_z85(&self) -> String {
        z85(&self.public)
    }
}

/// The public key of `secret`: CURVE keys are X25519 ones, the public key
/// the secret one times the curve's base point. libsodium computes it, the
/// library libzmq's CURVE runs on.
fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    let mut public = [0u8; 32];
    // SAFETY: sodium_init may be called any number of times from any thread;
    // the multiplication reads 32 bytes at `secret` and writes 32 at `public`,
    // both arrays of that size. Its result is 0 for any scalar: no check.
    unsafe {
        libsodium_sys::sodium_init();
        libsodium_sys::crypto_scalarmult_curve25519_base(public.as_mut_ptr(), secret.as_ptr());
    }
    public
}

/// Z85 text of a key: 32 bytes are a multiple of 4, which is all Z85 needs.
pub(crate) fn z85(key: &[u8; 32]) -> String {
    zmq::z85_encode(key).expect("32 bytes are a multiple of 4")
}

/// The file mode bits that let group or others at a file.
const OPEN_TO_OTHERS: u32 = 0o077;

/// Certificates are a few hundred bytes; anything past this is not one.
const MAX_CERTIFICATE_BYTES: u64 = 64 * 1024;

/// Makes a fresh key pair and writes it as `DIR/NAME.key` (public, mode
/// 0644 less the umask) and `DIR/NAME.key_secret` (both keys, mode 0600 from
/// its creation), as pyzmq's `create_certificates` does; returns the two
/// paths in that order. An existing file of either name is left alone and
/// the call fails; nothing of a half-written pair is left behind.
pub fn write_certificates(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    write_pair(&Keypair::generate()?, dir, name)
}

/// [`write_certificates`] for a given pair, which must hold its secret.
fn write_pair(pair: &Keypair, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    check_name(name)?;
    let secret = pair.secret.as_ref().expect("write_pair is given whole pairs");
    let public_path = dir.join(format!("{name}.key"));
    let secret_path = dir.join(format!("{name}.key_secret"));
    // Both created before either is written: a refusal of the second
    // leaves nothing but the empty first, which we made and remove.
    let mut secret_file = create_new(&secret_path, 0o600)?;
    let mut public_file = match create_new(&public_path, 0o644) {
        Ok(file) => file,
        Err(e) => {
            let _ = fs::remove_file(&secret_path);
            return Err(e);
        }
    };
    let public = z85(&pair.public);
    let written = write_text(&mut secret_file, &secret_path, &certificate(SECRET_BANNER, &public, Some(&z85(secret))))
        .and_then(|()| write_text(&mut public_file, &public_path, &certificate(PUBLIC_BANNER, &public, None)));
    if let Err(e) = written {
        let _ = fs::remove_file(&secret_path);
        let _ = fs::remove_file(&public_path);
        return Err(e);
    }
    Ok((public_path, secret_path))
}

/// A name that makes one file in the directory, as `NAME.key`.
fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('/') {
        "holds a path separator (the directory is given apart)"
    } else if name.contains('\0') {
        "holds a NUL byte"
    } else if name == "." || name == ".." {
        "names a directory"
    } else {
        return Ok(());
    };
    Err(Error::BadKeyName { name: name.to_string(), reason })
}

/// Opens a file that must not exist yet (O_EXCL), with `mode` from the start.
fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::CertificateExists { path: path.to_path_buf() }
        } else {
            Error::io(format!("creating {}", path.display()))(e)
        }
    })
}

fn write_text(file: &mut File, path: &Path, text: &str) -> Result<()> {
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::io(format!("writing {}", path.display())))
}

const SECRET_BANNER: &str = "\
#   ZeroMQ CURVE **Secret** Certificate, made by powerhose
#   Keep it to yourself, mode 0600: CURVE peers need only the public
#   certificate of the same name (.key).
";

const PUBLIC_BANNER: &str = "\
#   ZeroMQ CURVE Public Certificate, made by powerhose
#   Give it to the peers that must know this key (a broker's allow-list
#   directory, a client that checks its server).
";

/// A certificate's text: the banner, an empty `metadata` section (pyzmq
/// writes one), and the keys under `curve`.
fn certificate(banner: &str, public: &str, secret: Option<&str>) -> String {
    let mut text = format!("{banner}\nmetadata\ncurve\n    public-key = \"{public}\"\n");
    if let Some(secret) = secret {
        text.push_str(&format!("    secret-key = \"{secret}\"\n"));
    }
    text
}

/// Reads a certificate, public (`NAME.key`) or secret (`NAME.key_secret`),
/// as pyzmq's `load_certificate` does. A file holding a secret key must be
/// closed to group and others ([`Error::SecretKeyExposed`] otherwise);
/// a file not in the format is an [`Error::BadCertificate`] naming the line.
pub fn load_certificate(path: &Path) -> Result<Keypair> {
    let found = read_certificate(path)?;
    Ok(Keypair { public: found.public, secret: found.secret.map(|(key, _)| key) })
}

/// Every public certificate (`*.key`) in `dir`, sorted by path: what an
/// allow-list directory holds. Secret certificates (`*.key_secret`), hidden
/// files and other names are skipped; a `.key` file that is malformed, or
/// that holds a secret key (a secret certificate under the public name),
/// fails the whole call with an error naming it.
pub fn load_public_dir(dir: &Path) -> Result<Vec<(PathBuf, [u8; 32])>> {
    let context = || format!("reading certificate directory {}", dir.display());
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(context())(e))? {
        let path = entry.map_err(|e| Error::io(context())(e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.starts_with('.') || !name.ends_with(".key") {
            continue;
        }
        // Symbolic links are followed; a directory called x.key is not a certificate.
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort();
    let mut keys = Vec::with_capacity(paths.len());
    for path in paths {
        let found = read_certificate(&path)?;
        if let Some((_, line)) = found.secret {
            let reason = "holds a secret-key; an allow-list takes public certificates only".to_string();
            return Err(Error::BadCertificate { path, line: Some(line), reason });
        }
        keys.push((path, found.public));
    }
    Ok(keys)
}

/// What a certificate file holds, once read and checked.
struct Found {
    public: [u8; 32],
    /// The secret key and its line.
    secret: Option<([u8; 32], usize)>,
}

fn read_certificate(path: &Path) -> Result<Found> {
    let mut file = File::open(path).map_err(Error::io(format!("opening certificate {}", path.display())))?;
    let mut text = Vec::new();
    (&mut file)
        .take(MAX_CERTIFICATE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(Error::io(format!("reading certificate {}", path.display())))?;
    if text.len() as u64 > MAX_CERTIFICATE_BYTES {
        let reason = format!("longer than {MAX_CERTIFICATE_BYTES} bytes; not a certificate");
        return Err(Error::BadCertificate { path: path.to_path_buf(), line: None, reason });
    }
    let keys = parse::parse(&text).map_err(|(line, reason)| Error::BadCertificate {
        path: path.to_path_buf(),
        line,
        reason,
    })?;
    if let Some((secret, line)) = keys.secret {
        // A pair that does not match fails every handshake, far from here.
        if public_of(&secret) != keys.public {
            let reason = "secret-key is not the secret of this certificate's public-key".to_string();
            return Err(Error::BadCertificate { path: path.to_path_buf(), line: Some(line), reason });
        }
        // The mode of the file read, not of whatever the path names now.
        let meta = file.metadata().map_err(Error::io(format!("reading the mode of {}", path.display())))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & OPEN_TO_OTHERS != 0 {
            return Err(Error::SecretKeyExposed { path: path.to_path_buf(), mode });
        }
    }
    Ok(Found { public: keys.public, secret: keys.secret })
}
