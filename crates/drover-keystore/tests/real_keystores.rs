//! Keystores made by the real tools: `keytool` (JDK) and `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use drover_keystore::{Error, Format, KeyType, open};

const PW: &str = "changeit";

fn run(dir: &Path, prog: &str, args: &[&str]) {
    let out = Command::new(prog).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(out.status.success(), "{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn keytool(dir: &Path, args: &[&str]) {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-storepass", PW, "-keypass", PW, "-validity", "30"]);
    run(dir, "keytool", &a);
}

struct Files {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Files {
    fn get(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path.join(name)).unwrap()
    }
}

fn make() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    keytool(
        &p,
        &[
            "-genkeypair",
            "-alias",
            "signer",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=Drover Signer,O=Example",
            "-storetype",
            "PKCS12",
            "-keystore",
            "ec.p12",
        ],
    );
    keytool(
        &p,
        &[
            "-genkeypair",
            "-alias",
            "rsa-signer",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-dname",
            "CN=RSA Signer",
            "-storetype",
            "JKS",
            "-keystore",
            "rsa.jks",
        ],
    );
    keytool(
        &p,
        &[
            "-genkeypair",
            "-alias",
            "ec-jks",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=EC JKS",
            "-storetype",
            "JKS",
            "-keystore",
            "ec.jks",
        ],
    );
    // Modern keytool writes PKCS#12 whatever the file is called.
    keytool(
        &p,
        &[
            "-genkeypair",
            "-alias",
            "modern",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=Modern",
            "-keystore",
            "keystore.jks",
        ],
    );
    keytool(
        &p,
        &[
            "-genkeypair",
            "-alias",
            "old-dsa",
            "-keyalg",
            "DSA",
            "-keysize",
            "2048",
            "-dname",
            "CN=DSA",
            "-storetype",
            "PKCS12",
            "-keystore",
            "dsa.p12",
        ],
    );
    run(
        &p,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=PEM Signer",
            "-days",
            "10",
        ],
    );
    run(&p, "openssl", &["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"]);
    run(
        &p,
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            "cert.pem",
            "-inkey",
            "key.pem",
            "-name",
            "ossl",
            "-out",
            "ossl.p12",
            "-passout",
            &format!("pass:{PW}"),
        ],
    );
    // A truststore with the CA only (what `truststore.jks` holds).
    run(
        &p,
        "keytool",
        &[
            "-importcert",
            "-noprompt",
            "-alias",
            "corp-ca",
            "-file",
            "cert.pem",
            "-storetype",
            "JKS",
            "-keystore",
            "trust.jks",
            "-storepass",
            PW,
        ],
    );
    Files { _dir: dir, path: p }
}

#[test]
fn keytool_and_openssl_keystores_load_by_alias_with_distinct_errors() {
    let f = make();

    let ks = open(&f.get("ec.p12"), Some(PW)).unwrap();
    assert_eq!(ks.format, Format::Pkcs12);
    let (key, certs) = ks.signing_key("signer").unwrap();
    assert_eq!(key.kind, KeyType::EcP256);
    assert!(certs[0].subject.contains("CN=Drover Signer"), "{}", certs[0].subject);
    assert_eq!(certs[0].public_key, "EC P-256");
    assert!(certs[0].not_after > certs[0].not_before);

    let ks = open(&f.get("rsa.jks"), Some(PW)).unwrap();
    assert_eq!(ks.format, Format::Jks);
    let (key, certs) = ks.signing_key("rsa-signer").unwrap();
    assert_eq!(key.kind, KeyType::Rsa);
    assert_eq!(certs[0].public_key, "RSA 2048");

    let ks = open(&f.get("ec.jks"), Some(PW)).unwrap();
    assert_eq!(ks.signing_key("ec-jks").unwrap().0.kind, KeyType::EcP256);

    let ks = open(&f.get("keystore.jks"), Some(PW)).unwrap();
    assert_eq!(ks.format, Format::Pkcs12, "detected from the bytes, not the name");
    assert_eq!(ks.aliases(), vec!["modern".to_string()]);

    let ks = open(&f.get("ossl.p12"), Some(PW)).unwrap();
    assert_eq!(ks.signing_key("ossl").unwrap().0.kind, KeyType::EcP256);

    let mut pem = f.get("cert.pem");
    pem.extend(f.get("key.pem"));
    let ks = open(&pem, None).unwrap();
    assert_eq!(ks.format, Format::Pem);
    assert_eq!(ks.signing_key("pem").unwrap().0.kind, KeyType::EcP256);
    assert!(ks.entries[0].certs[0].subject.contains("PEM Signer"));
    assert_eq!(open(&f.get("ed.pem"), None).unwrap().signing_key("pem").unwrap().0.kind, KeyType::Ed25519);

    let ks = open(&f.get("trust.jks"), Some(PW)).unwrap();
    assert_eq!(ks.entries[0].alias, "corp-ca");
    assert!(ks.entries[0].key.is_none());
    assert_eq!(ks.signing_key("corp-ca").unwrap_err(), Error::NoPrivateKey { alias: "corp-ca".into() });

    // Distinct errors.
    for file in ["ec.p12", "rsa.jks", "keystore.jks", "ossl.p12"] {
        assert_eq!(open(&f.get(file), Some("wrong-password")).unwrap_err(), Error::WrongPassword, "{file}");
    }
    let ks = open(&f.get("ec.p12"), Some(PW)).unwrap();
    match ks.signing_key("nope").unwrap_err() {
        Error::MissingAlias { alias, available } => {
            assert_eq!(alias, "nope");
            assert_eq!(available, vec!["signer".to_string()]);
        }
        other => panic!("{other}"),
    }
    let ks = open(&f.get("dsa.p12"), Some(PW)).unwrap();
    assert!(matches!(ks.signing_key("old-dsa").unwrap_err(), Error::UnsupportedKeyType { kind, .. } if kind == "DSA"));
    for file in ["ec.p12", "rsa.jks"] {
        let mut b = f.get(file);
        let n = b.len();
        b.truncate(n / 2);
        assert!(
            matches!(open(&b, Some(PW)).unwrap_err(), Error::Corrupt { .. } | Error::WrongPassword),
            "{file} truncated"
        );
        let mut b = f.get(file);
        b[n / 2] ^= 0xFF;
        let e = open(&b, Some(PW)).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. } | Error::WrongPassword), "{file} flipped: {e}");
    }

    // Nothing printed shows key material.
    let ks = open(&f.get("ec.p12"), Some(PW)).unwrap();
    let shown = format!("{ks:?}");
    assert!(shown.contains("<redacted>"));
    let der = ks.signing_key("signer").unwrap().0.pkcs8_der().to_vec();
    assert!(!shown.contains(&format!("{:?}", &der[der.len() - 16..])), "key bytes in Debug output");
}
