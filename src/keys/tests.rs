//! Writing, reading and refusing certificates, on files in a temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// A fixed pair, so a round trip can be compared key for key.
fn pair() -> Keypair {
    Keypair { public: public_of(&[42; 32]), secret: Some([42; 32]) }
}

/// `text` as `dir/name`, with `mode`.
fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The one-line message of the error loading `text` as a certificate.
fn refusal(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "bad.key_secret", text, 0o600);
    let message = load_certificate(&path).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!message.contains('\n'), "{message}");
    message
}

#[test]
fn a_written_pair_reads_back_with_its_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (public_path, secret_path) = write_pair(&pair(), dir.path(), "server").unwrap();
    assert_eq!(public_path, dir.path().join("server.key"));
    assert_eq!(secret_path, dir.path().join("server.key_secret"));
    assert_eq!(load_certificate(&secret_path).unwrap(), pair());
    assert_eq!(load_certificate(&public_path).unwrap(), Keypair { public: pair().public, secret: None });
    assert_eq!(mode(&secret_path), 0o600);
    // 0644 less the umask, whatever the test runner's is: never more.
    assert_eq!(mode(&public_path) & !0o644, 0);
    let text = fs::read_to_string(&secret_path).unwrap();
    assert!(text.contains(&format!("    public-key = \"{}\"\n", pair().public_z85())), "{text}");
}

#[test]
fn fresh_pairs_differ_and_their_debug_hides_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_secret) = write_certificates(dir.path(), "a").unwrap();
    let (b, _) = write_certificates(dir.path(), "b").unwrap();
    assert_ne!(load_certificate(&a).unwrap().public, load_certificate(&b).unwrap().public);
    let whole = load_certificate(&a_secret).unwrap();
    let shown = format!("{whole:?}");
    assert!(shown.contains(&whole.public_z85()) && shown.contains("<hidden>"), "{shown}");
    assert!(!shown.contains(&z85(&whole.secret.unwrap())), "{shown}");
}

#[test]
fn existing_files_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (public_path, secret_path) = write_certificates(dir.path(), "s").unwrap();
    let before = (fs::read(&public_path).unwrap(), fs::read(&secret_path).unwrap());
    let err = write_certificates(dir.path(), "s").unwrap_err();
    assert_eq!(err.to_string(), format!("{} already exists; not overwriting it", secret_path.display()));
    assert_eq!((fs::read(&public_path).unwrap(), fs::read(&secret_path).unwrap()), before);
    // Only the public one there: refused, and no secret file is left behind.
    let lone = file(dir.path(), "lone.key", "x", 0o644);
    let err = write_certificates(dir.path(), "lone").unwrap_err();
    assert!(matches!(&err, Error::CertificateExists { path } if *path == lone), "{err:?}");
    assert!(!dir.path().join("lone.key_secret").exists());
    assert_eq!(fs::read_to_string(&lone).unwrap(), "x");
}

#[test]
fn names_that_are_not_one_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", ".", "..", "a/b", "../up", "nul\0"] {
        let err = write_certificates(dir.path(), name).unwrap_err();
        assert!(matches!(err, Error::BadKeyName { .. }), "{name:?}: {err:?}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_secret_open_to_others_is_refused_a_public_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (public_path, secret_path) = write_pair(&pair(), dir.path(), "k").unwrap();
    for open in [0o640, 0o604, 0o660, 0o610] {
        fs::set_permissions(&secret_path, fs::Permissions::from_mode(open)).unwrap();
        let err = load_certificate(&secret_path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} holds a secret key but its mode is {open:04o} (group or others have access); chmod 600 it",
                secret_path.display()
            )
        );
    }
    fs::set_permissions(&secret_path, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(load_certificate(&secret_path).unwrap().secret.is_some());
    fs::set_permissions(&public_path, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(load_certificate(&public_path).is_ok());
}

const KEY: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

#[test]
fn malformed_certificates_are_named_with_their_line() {
    let cases = [
        (
            format!("curve\n    public-key = \"{}\"\n", &KEY[..39]),
            " line 2: public-key: 39 characters, where a Z85 key has 40",
        ),
        (format!("curve\n    public-key = \"{}~\"\n", &KEY[..39]), " line 2: public-key: '~' is not a Z85 character"),
        (format!("curve\n    public-key = \"{KEY}\n"), " line 2: the value's closing \" is missing"),
        (format!("curve\n    public-key = \"{KEY}\" x\n"), " line 2: \"x\" after the quoted value"),
        (format!("# c\n\n    public-key = \"{KEY}\"\n"), " line 3: public-key comes before any section"),
        (format!("curve\n    public-key \"{KEY}\"\n"), " line 2: expected an indented `name = value`"),
        ("curve keys\n".to_string(), " line 1: expected a section name (such as curve), found \"curve keys\""),
        (
            format!("curve\n    public-key = \"{KEY}\"\n    public-key = \"{KEY}\"\n"),
            " line 3: a second public-key (the first is on line 2)",
        ),
        // Two keys, each valid, that are not one pair.
        (
            format!("curve\n    public-key = \"{KEY}\"\n    secret-key = \"{}\"\n", z85(&[42; 32])),
            " line 3: secret-key is not the secret of this certificate's public-key",
        ),
        // Five Z85 characters worth more than 2^32 - 1.
        (format!("curve\n    public-key = \"{}#####\"\n", &KEY[..35]), " line 2: public-key: a Z85 group out of range"),
        (format!("metadata\n    public-key = \"{KEY}\"\n"), ": no public-key in a curve section"),
        (String::new(), ": no public-key in a curve section"),
    ];
    for (text, expected) in cases {
        let message = refusal(&text);
        assert!(message.contains(&format!("bad.key_secret{expected}")), "{message:?} lacks {expected:?}");
    }
    let message = refusal("curve\n    public-key = \"\u{e9}\"\n");
    assert!(message.ends_with("line 2: public-key: 1 characters, where a Z85 key has 40"), "{message}");
    let mut binary = b"curve\n    public-key = \"".to_vec();
    binary.extend_from_slice(&[0xff; 40]);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("b.key"), binary).unwrap();
    let message = load_certificate(&dir.path().join("b.key")).unwrap_err().to_string();
    assert!(message.ends_with("b.key line 2: not UTF-8 text"), "{message}");
}

#[test]
fn czmq_variations_are_read() {
    // Single quotes, bare values, tabs, CRLF, comments after values,
    // metadata and other sections around curve.
    let (public, secret) = (pair().public_z85(), z85(&[42; 32]));
    let text = format!(
        "#  header\r\nmetadata\r\n    name = \"x # y\"\r\nother # note\n\tk = v\ncurve\n\tpublic-key = '{public}' # ok\n    secret-key = {secret}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "v.key_secret", &text, 0o600);
    assert_eq!(load_certificate(&path).unwrap(), pair());
}

#[test]
fn a_public_dir_lists_the_key_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = |n: u8| Keypair { public: public_of(&[n; 32]), secret: Some([n; 32]) };
    write_pair(&keys(2), dir.path(), "b").unwrap();
    write_pair(&keys(1), dir.path(), "a").unwrap();
    file(dir.path(), "notes.txt", "not a certificate", 0o644);
    file(dir.path(), ".hidden.key", "not a certificate", 0o644);
    fs::create_dir(dir.path().join("sub.key")).unwrap();
    let found = load_public_dir(dir.path()).unwrap();
    assert_eq!(found, vec![(dir.path().join("a.key"), keys(1).public), (dir.path().join("b.key"), keys(2).public)]);
    assert!(load_public_dir(&dir.path().join("none")).unwrap_err().to_string().contains("none"));
    // A malformed one fails the lot, naming it.
    let bad = file(dir.path(), "c.key", "curve\n    public-key = \"short\"\n", 0o644);
    let message = load_public_dir(dir.path()).unwrap_err().to_string();
    assert!(message.starts_with(&format!("certificate {} line 2: ", bad.display())), "{message}");
    // So does a secret certificate under a public name, even a private one.
    fs::remove_file(&bad).unwrap();
    fs::copy(dir.path().join("a.key_secret"), &bad).unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    let message = load_public_dir(dir.path()).unwrap_err().to_string();
    assert!(message.contains("c.key line 8: holds a secret-key"), "{message}");
}
