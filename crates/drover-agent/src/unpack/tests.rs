//! Hostile archives, each as a real `.tar.gz` unpacked into a real directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{hook, unpack};

enum E<'a> {
    File(&'a str, &'a str, u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
}

/// Writes names byte for byte (the builder's own setters refuse `..` and absolute paths, which
/// is what these archives need).
fn raw_name(field: &mut [u8], name: &str) {
    assert!(name.len() < field.len(), "test names fit the old header");
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn archive(entries: &[E]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, data): (&str, &[u8]) = match e {
            E::File(n, body, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (n, body.as_bytes())
            }
            E::Dir(n, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (n, b"")
            }
            E::Symlink(n, to) | E::HardLink(n, to) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                raw_name(&mut h.as_old_mut().linkname, to);
                (n, b"")
            }
            E::Fifo(n) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                (n, b"")
            }
        };
        raw_name(&mut h.as_old_mut().name, name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append(&h, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Unpacks into `work/release` and returns the error text, if any.
fn try_unpack(work: &Path, entries: &[E]) -> Result<super::Unpacked, String> {
    let tgz = work.join("a.tar.gz");
    std::fs::write(&tgz, archive(entries)).unwrap();
    unpack(&tgz, &work.join("release")).map_err(|e| e.to_string())
}

#[test]
fn an_ordinary_release_unpacks_with_its_modes_and_inner_links() {
    let w = tempfile::tempdir().unwrap();
    let got = try_unpack(
        w.path(),
        &[
            E::Dir("./", 0o755),
            E::File("./bin/run.sh", "#!/bin/sh\necho hi\n", 0o755),
            E::Dir("conf", 0o750),
            E::File("conf/app.toml", "x = 1\n", 0o640),
            E::Symlink("lib/libx.so", "../bin/run.sh"),
            E::Symlink("conf-link", "conf"),
            E::HardLink("bin/again.sh", "bin/run.sh"),
            E::File("conf/app.toml", "x = 2\n", 0o640), // a later copy wins
        ],
    )
    .unwrap();
    assert_eq!((got.files, got.dirs, got.symlinks), (4, 1, 2), "entries, as the archive lists them");
    let r = w.path().join("release");
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/run.sh"), 0o755);
    assert_eq!(mode("conf"), 0o750);
    assert_eq!(std::fs::read_to_string(r.join("conf/app.toml")).unwrap(), "x = 2\n");
    assert_eq!(std::fs::read_to_string(r.join("lib/libx.so")).unwrap(), "#!/bin/sh\necho hi\n");
}

#[test]
fn setuid_setgid_and_sticky_bits_are_dropped() {
    let w = tempfile::tempdir().unwrap();
    try_unpack(w.path(), &[E::File("su", "x", 0o6755), E::Dir("tmp", 0o1777), E::File("g", "x", 0o2700)]).unwrap();
    let r = w.path().join("release");
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("su"), 0o755);
    assert_eq!(mode("tmp"), 0o777);
    assert_eq!(mode("g"), 0o700);
}

#[test]
fn every_way_out_is_refused_and_nothing_lands_outside() {
    // (archive, what the refusal names)
    let cases: Vec<(Vec<E>, &str)> = vec![
        (vec![E::File("../escaped", "x", 0o644)], "'..' are refused"),
        (vec![E::File("/tmp/escaped-abs", "x", 0o644)], "absolute paths"),
        (vec![E::File("a/../../escaped", "x", 0o644)], "'..' are refused"),
        (vec![E::Symlink("out", "/etc")], "symlink out -> /etc: points outside"),
        (vec![E::Symlink("d/out", "../../outside")], "points outside"),
        // A link to a directory outside, then a file through it.
        (vec![E::Symlink("up", ".."), E::File("up/escaped", "x", 0o644)], "points outside"),
        // Text says inside, the disk says outside: `a -> .` and `b -> a/..` is the parent.
        (vec![E::Symlink("a", "."), E::Symlink("b", "a/..")], "b -> a/..: resolves outside"),
        // A link to a directory inside, then a file through it: refused too.
        (vec![E::Dir("real", 0o755), E::Symlink("via", "real"), E::File("via/f", "x", 0o644)], "is a symlink"),
        // A link to nothing.
        (vec![E::Symlink("x", "missing"), E::File("y", "x", 0o644)], "points to nothing"),
        (vec![E::HardLink("h", "../outside-file")], "hard link h -> ../outside-file: points outside"),
        (vec![E::HardLink("h", "nothing-yet")], "only files unpacked before it"),
        (vec![E::Fifo("pipe")], "a FIFO cannot be unpacked"),
        (vec![E::File("f", "x", 0o644), E::File("f/g", "x", 0o644)], "is a file, not a directory"),
        (vec![E::Dir("d", 0o755), E::File("d", "x", 0o644)], "would replace a directory"),
    ];
    for (i, (entries, says)) in cases.into_iter().enumerate() {
        let w = tempfile::tempdir().unwrap();
        std::fs::write(w.path().join("outside-file"), "mine").unwrap();
        let err = try_unpack(w.path(), &entries).expect_err(&format!("case {i} must be refused"));
        assert!(err.contains(says), "case {i}: {err:?} should say {says:?}");
        let mut names: Vec<String> =
            std::fs::read_dir(w.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["a.tar.gz", "outside-file", "release"], "case {i}: nothing beside the release");
        assert_eq!(std::fs::read_to_string(w.path().join("outside-file")).unwrap(), "mine", "case {i}");
        assert!(!Path::new("/tmp/escaped-abs").exists());
    }
}

#[test]
fn a_file_never_replaces_a_link_by_writing_through_it() {
    let w = tempfile::tempdir().unwrap();
    std::fs::write(w.path().join("target-file"), "mine").unwrap();
    // `x -> y` inside; then a file named x: the link is replaced, y is untouched.
    try_unpack(w.path(), &[E::File("y", "keep", 0o644), E::Symlink("x", "y"), E::File("x", "new", 0o644)]).unwrap();
    let r = w.path().join("release");
    assert_eq!(std::fs::read_to_string(r.join("y")).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(r.join("x")).unwrap(), "new");
    assert!(!std::fs::symlink_metadata(r.join("x")).unwrap().file_type().is_symlink());
}

#[test]
fn hooks_must_be_regular_files() {
    let w = tempfile::tempdir().unwrap();
    try_unpack(
        w.path(),
        &[
            E::File("scripts/pre.sh", "true\n", 0o755),
            E::Symlink("pre-deploy", "scripts/pre.sh"),
            E::File("post-deploy", "true\n", 0o755),
        ],
    )
    .unwrap();
    let r = w.path().join("release");
    let err = hook(&r, "pre-deploy").unwrap_err();
    assert!(err.contains("is a symlink"), "{err}");
    assert_eq!(hook(&r, "post-deploy").unwrap(), Some(r.join("post-deploy")));
    assert_eq!(hook(&r, "nope").unwrap(), None);
    std::fs::create_dir(r.join("dir-hook")).unwrap();
    assert!(hook(&r, "dir-hook").unwrap_err().contains("not a regular file"));
}
