//! Unpacking an artifact (`.tar.gz`) into a fresh release directory, on the assumption that the
//! archive was made by someone who wants out of it.
//!
//! Invariants, each checked per entry (the first offence fails the whole unpack):
//! - an entry's path is relative and has no `..`; every directory on the way to it is a real
//!   directory made by this unpack, never a symlink, so nothing is written through a link;
//! - only regular files, directories, symlinks and hard links to files already unpacked; devices,
//!   FIFOs and sparse files are refused;
//! - permissions are masked to `0o777`: no setuid, setgid or sticky bit survives, and ownership
//!   is never taken from the archive;
//! - a symlink's target is relative and stays inside the release, checked twice: by its text when
//!   it is made, and once everything is unpacked, by resolving it on disk (which catches chains such
//!   as `a -> .` plus `b -> a/..`); a symlink that resolves to nothing is refused too.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// What unpacking made: counts for the deployment's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
}

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The entry's path inside the release: relative, no `..`, no root or prefix. `None` for the
/// release itself (`./`).
fn inside(raw: &Path) -> io::Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(format!("entry {}: absolute paths and '..' are refused", raw.display())));
            }
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Where a symlink at `link` (relative to the release) pointing at `target` lands, by its text;
/// `None` when it climbs out of the release.
fn lexical_target(link: &Path, target: &Path) -> Option<PathBuf> {
    let mut at: Vec<&std::ffi::OsStr> = link.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(p) => at.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at.iter().collect())
}

/// Makes every directory from the release down to `rel`'s parent, refusing to pass through
/// anything that is not a real directory.
fn parents(root: &Path, rel: &Path, made: &mut Vec<(PathBuf, u32)>) -> io::Result<()> {
    let mut at = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(()) };
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(format!(
                    "entry {}: its directory {} is a symlink; nothing is unpacked through a link",
                    rel.display(),
                    at.strip_prefix(root).unwrap_or(&at).display()
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refuse(format!(
                    "entry {}: {} is a file, not a directory",
                    rel.display(),
                    at.strip_prefix(root).unwrap_or(&at).display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at)?;
                made.push((at.clone(), 0o755));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Clears the way for a non-directory entry at `dest`: a later entry of the same name replaces
/// an earlier file or link (tar's append semantics), never a directory.
fn clear(dest: &Path, rel: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(refuse(format!("entry {}: would replace a directory", rel.display()))),
        Ok(_) => fs::remove_file(dest),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks the gzipped tar `archive` into `into` (created; expected to be new and empty).
#[cfg(test)]
pub fn unpack(archive: &Path, into: &Path) -> io::Result<Unpacked> {
    unpack_from(fs::File::open(archive)?, into)
}

/// Unpacks the gzipped tar read from `f` (opened by the agent, which may be the only one that
/// can open it) into `into` (created with the caller's filesystem uid; new and empty).
pub fn unpack_from(f: fs::File, into: &Path) -> io::Result<Unpacked> {
    fs::create_dir(into)?;
    let root = fs::canonicalize(into)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(f)));
    let mut done = Unpacked::default();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            continue;
        }
        let raw = entry.path()?.into_owned();
        let Some(rel) = inside(&raw)? else {
            continue;
        };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        parents(&root, &rel, &mut dirs)?;
        let dest = root.join(&rel);
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                clear(&dest, &rel)?;
                let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&dest)?;
                done.bytes += io::copy(&mut entry, &mut out)?;
                out.set_permissions(fs::Permissions::from_mode(mode))?;
                done.files += 1;
            }
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refuse(format!("entry {}: a directory replacing a file", rel.display()))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dest)?,
                    Err(e) => return Err(e),
                }
                dirs.retain(|(d, _)| *d != dest);
                dirs.push((dest, mode));
                done.dirs += 1;
            }
            EntryType::Symlink => {
                let target = entry.link_name()?.map(|t| t.into_owned()).unwrap_or_default();
                if target.as_os_str().is_empty() {
                    return Err(refuse(format!("symlink {}: no target", rel.display())));
                }
                if target.is_absolute() || lexical_target(&rel, &target).is_none() {
                    return Err(refuse(format!(
                        "symlink {} -> {}: points outside the release",
                        rel.display(),
                        target.display()
                    )));
                }
                clear(&dest, &rel)?;
                std::os::unix::fs::symlink(&target, &dest)?;
                links.push((rel, target));
                done.symlinks += 1;
            }
            EntryType::Link => {
                let raw_target = entry.link_name()?.map(|t| t.into_owned()).unwrap_or_default();
                let source = match inside(&raw_target) {
                    Ok(Some(t)) => root.join(t),
                    _ => {
                        return Err(refuse(format!(
                            "hard link {} -> {}: points outside the release",
                            rel.display(),
                            raw_target.display()
                        )));
                    }
                };
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => {
                        return Err(refuse(format!(
                            "hard link {} -> {}: only files unpacked before it can be linked",
                            rel.display(),
                            raw_target.display()
                        )));
                    }
                }
                clear(&dest, &rel)?;
                fs::hard_link(&source, &dest)?;
                done.files += 1;
            }
            other => {
                return Err(refuse(format!(
                    "entry {}: a {} cannot be unpacked (only files, directories and symlinks)",
                    rel.display(),
                    kind_name(other)
                )));
            }
        }
    }
    // On disk, every link must end inside the release.
    for (rel, target) in &links {
        match fs::canonicalize(root.join(rel)) {
            Ok(real) if real.starts_with(&root) => {}
            Ok(_) => {
                return Err(refuse(format!(
                    "symlink {} -> {}: resolves outside the release",
                    rel.display(),
                    target.display()
                )));
            }
            Err(_) => {
                return Err(refuse(format!(
                    "symlink {} -> {}: points to nothing in the release",
                    rel.display(),
                    target.display()
                )));
            }
        }
    }
    // Directory modes last (deepest first), so a read-only directory did not stop its contents.
    dirs.sort_by_key(|(d, _)| std::cmp::Reverse(d.components().count()));
    for (d, mode) in dirs {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode))?;
    }
    Ok(done)
}

fn kind_name(k: EntryType) -> &'static str {
    match k {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}

/// A hook (`pre-deploy`, `post-deploy`) of a release: `Ok(None)` when there is none; an error when
/// the name is taken by anything but a regular file (a symlink, even to a file inside, is refused).
pub fn hook(release: &Path, name: &str) -> Result<Option<PathBuf>, String> {
    let p = release.join(name);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_file() => Ok(Some(p)),
        Ok(m) if m.file_type().is_symlink() => {
            Err(format!("the {name} hook is a symlink; hooks must be regular files inside the release"))
        }
        Ok(_) => Err(format!("the {name} hook is not a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading the {name} hook: {e}")),
    }
}

#[cfg(test)]
mod tests;
