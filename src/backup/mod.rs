//! Backup bundles: one `<app_id>-<UTC timestamp>.tar.zst` file each, holding
//! `manifest.json` (first, so listing reads only it), the app's `data/` tree with owners,
//! modes and extended attributes (PAX `SCHILY.xattr.*` records, as GNU tar writes them),
//! and with images an `images/` OCI image layout. Plain `tar --zstd` reads it.
//! Everything here blocks: callers run it on blocking threads.

use crate::app::Credentials;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 1;
const SUFFIX: &str = ".tar.zst";
const MANIFEST: &str = "manifest.json";
/// zstd's default level, as `tar --zstd` uses it.
const LEVEL: i32 = 3;
/// Files are read, and the tar stream handed to the compressing thread, this much at a
/// time: tar's own copies go 8 KiB at a time, a syscall each.
const CHUNK: usize = 1 << 20;
/// Chunks the compressing thread may fall behind by.
const CHUNKS_QUEUED: usize = 4;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub app_id: String,
    pub app_name: String,
    pub app_version: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub http_port: u16,
    /// The catalog's app.toml and the compose.yaml as installed (rendered).
    pub app_toml: String,
    pub compose_yaml: String,
    /// Image reference → the digest the app is pinned to.
    pub images: Vec<PinnedImage>,
    pub credentials: Credentials,
    pub include_images: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PinnedImage {
    pub reference: String,
    pub digest: String,
}

/// A bundle as AppBackupList shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub backup: String,
    pub app_id: String,
    pub app_name: String,
    pub app_version: String,
    pub created: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub include_images: bool,
}

/// A bundle's file name: no folder, no hidden file, the bundle suffix.
pub fn is_bundle_name(name: &str) -> bool {
    name.ends_with(SUFFIX)
        && name.len() > SUFFIX.len()
        && !name.starts_with('.')
        && !name.contains(['/', '\0'])
}

/// `<app_id>-20260102T030405.678Z.tar.zst`.
pub fn bundle_name(app_id: &str, now: std::time::SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_millis(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{app_id}-{stamp}{SUFFIX}")
}

/// What a backup writes, besides its manifest.
pub struct Contents<'a> {
    pub data: &'a Path,
    /// An OCI image layout to put under `images/`.
    pub images: Option<&'a Path>,
}

/// A file a backup works with beside its bundle, hidden (never listed): `.<bundle>.<what>`.
pub fn work_path(bundle: &Path, what: &str) -> PathBuf {
    let name = bundle.file_name().unwrap_or_default().to_string_lossy();
    bundle.with_file_name(format!(".{name}.{what}"))
}

/// What a backup cut short left of `bundle`: its work files and, when the bundle itself
/// was never written, its kept digest. Whether the bundle was written.
pub fn clean_after(bundle: &Path) -> io::Result<bool> {
    let written = bundle.is_file();
    let prefix = work_path(bundle, "");
    let (dir, prefix) = (
        bundle.parent().unwrap_or(Path::new(".")),
        prefix.file_name(),
    );
    let prefix = prefix.unwrap_or_default().to_string_lossy().to_string();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with(&prefix) {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    if !written {
        match std::fs::remove_file(digest_file(bundle)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(written)
}

/// The sha256 of a bundle is kept beside it, so a listing need not read it all.
fn digest_file(bundle: &Path) -> PathBuf {
    let mut name = bundle.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    bundle.with_file_name(name)
}

/// Writes a bundle at `path` (0600), through a hidden partial file renamed at the end:
/// a failed backup leaves nothing. Its size and sha256.
pub fn write(path: &Path, manifest: &Manifest, contents: &Contents) -> io::Result<(u64, String)> {
    let partial = work_path(path, "partial");
    let written = write_to(&partial, manifest, contents);
    match written {
        Ok((size, sha)) => {
            write_private(&digest_file(path), sha.as_bytes())?;
            std::fs::rename(&partial, path)?;
            Ok((size, sha))
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

fn write_to(partial: &Path, manifest: &Manifest, contents: &Contents) -> io::Result<(u64, String)> {
    let _ = std::fs::remove_file(partial);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)?;
    let mut tar = tar::Builder::new(Pipe::compressing_to(file));
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let manifest_bytes = serde_json::to_vec_pretty(manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    tar.append_data(&mut header, MANIFEST, manifest_bytes.as_slice())?;
    append_tree(&mut tar, contents.data, Path::new("data"), true)?;
    if let Some(images) = contents.images {
        append_tree(&mut tar, images, Path::new("images"), false)?;
    }
    tar.into_inner()?.finish()
}

/// The tar stream's way to its file: compressed, hashed and written on a thread of its
/// own while this one reads the data, as `tar | zstd` splits the work between two
/// processes.
struct Pipe {
    chunk: Vec<u8>,
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<io::Result<(u64, String)>>>,
}

impl Pipe {
    fn compressing_to(file: std::fs::File) -> Pipe {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_QUEUED);
        let worker = std::thread::spawn(move || {
            let hashing = HashingWriter {
                inner: io::BufWriter::with_capacity(CHUNK, file),
                hash: Sha256::new(),
                size: 0,
            };
            let mut encoder = zstd::Encoder::new(hashing, LEVEL)?;
            // zstd's own workers compress while this thread hashes and writes: a
            // bundle is made at the speed of reading the data, not of one core's zstd.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            encoder.multithread(cores.min(4) as u32)?;
            for chunk in received {
                encoder.write_all(&chunk)?;
            }
            let mut hashing = encoder.finish()?;
            hashing.inner.flush()?;
            hashing.inner.get_ref().sync_all()?;
            Ok((hashing.size, hex::encode(hashing.hash.finalize())))
        });
        Pipe {
            chunk: Vec::with_capacity(CHUNK),
            chunks: Some(chunks),
            worker: Some(worker),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let sent = self.chunks.as_ref().map(|c| c.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped: its error says why.
            _ => Err(self.join().err().unwrap_or_else(|| {
                io::Error::other("the compressing thread stopped without an error")
            })),
        }
    }

    fn join(&mut self) -> io::Result<(u64, String)> {
        self.chunks = None;
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the compressing thread panicked")),
            None => Err(io::Error::other("the compressing thread already ended")),
        }
    }

    /// The rest sent, the file compressed and synced: its size and sha256.
    fn finish(mut self) -> io::Result<(u64, String)> {
        if !self.chunk.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends `from` as `name` and everything under it, with extended attributes when
/// `xattrs`. Sockets are left out, as GNU tar does: they are made by programs at start.
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    from: &Path,
    name: &Path,
    xattrs: bool,
) -> io::Result<()> {
    let metadata = std::fs::symlink_metadata(from)?;
    if metadata.file_type().is_socket() {
        return Ok(());
    }
    if xattrs {
        let attributes = read_xattrs(from)?;
        if !attributes.is_empty() {
            tar.append_pax_extensions(
                attributes
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_slice())),
            )?;
        }
    }
    if metadata.is_file() {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
        let file = io::BufReader::with_capacity(CHUNK, std::fs::File::open(from)?);
        tar.append_data(&mut header, name, file)?;
    } else {
        tar.append_path_with_name(from, name)?;
    }
    if metadata.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
        // The same tree gives the same bundle.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            append_tree(tar, &entry.path(), &name.join(entry.file_name()), xattrs)?;
        }
    }
    Ok(())
}

/// `SCHILY.xattr.<name>` → value, for every extended attribute of the path itself.
fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut found = Vec::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(found),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            found.push((format!("SCHILY.xattr.{}", name.to_string_lossy()), value));
        }
    }
    Ok(found)
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn open(
    path: &Path,
) -> io::Result<tar::Archive<zstd::Decoder<'static, io::BufReader<std::fs::File>>>> {
    Ok(tar::Archive::new(zstd::Decoder::new(std::fs::File::open(
        path,
    )?)?))
}

/// The bundle's manifest: its first entry, so only the start of the file is read.
pub fn read_manifest(path: &Path) -> io::Result<Manifest> {
    let mut archive = open(path)?;
    let mut entry = archive
        .entries()?
        .next()
        .ok_or_else(|| invalid("the bundle is empty"))??;
    if entry.path()? != Path::new(MANIFEST) {
        return Err(invalid("the bundle does not begin with manifest.json"));
    }
    let mut bytes = Vec::new();
    entry.by_ref().take(16 << 20).read_to_end(&mut bytes)?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    if manifest.format != FORMAT_VERSION {
        return Err(invalid(&format!(
            "bundle format {} (this appunit reads {FORMAT_VERSION})",
            manifest.format
        )));
    }
    Ok(manifest)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Unpacks the bundle's `data/` and `images/` into `into` (an app's folder), owners,
/// modes and extended attributes kept. Any other entry is refused; `unpack_in` refuses
/// `..` and absolute paths, so nothing lands outside `into`.
pub fn unpack(path: &Path, into: &Path) -> io::Result<()> {
    let mut archive = open(path)?;
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_preserve_mtime(true);
    std::fs::create_dir_all(into)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        if name == Path::new(MANIFEST) {
            continue;
        }
        if !(name.starts_with("data") || name.starts_with("images")) {
            return Err(invalid(&format!("unexpected entry {}", name.display())));
        }
        if !entry.unpack_in(into)? {
            return Err(invalid(&format!("{} escapes the bundle", name.display())));
        }
    }
    Ok(())
}

/// Every bundle in `dir`, newest first; `only` keeps one app's.
pub fn list(dir: &Path, only: Option<&str>) -> io::Result<Vec<BackupInfo>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !is_bundle_name(&name) {
            continue;
        }
        let path = entry.path();
        let manifest = match read_manifest(&path) {
            Ok(manifest) => manifest,
            Err(err) => {
                tracing::warn!(bundle = name, %err, "not a readable backup: left out");
                continue;
            }
        };
        if only.is_some_and(|id| id != manifest.app_id) {
            continue;
        }
        found.push(BackupInfo {
            sha256: sha256_of(&path)?,
            size_bytes: entry.metadata()?.len(),
            backup: name,
            app_id: manifest.app_id,
            app_name: manifest.app_name,
            app_version: manifest.app_version,
            created: manifest.created,
            include_images: manifest.include_images,
        });
    }
    found.sort_by(|a, b| b.created.cmp(&a.created).then(b.backup.cmp(&a.backup)));
    Ok(found)
}

/// The bundle's sha256: as kept beside it, or computed (a bundle from another host)
/// and kept.
fn sha256_of(path: &Path) -> io::Result<String> {
    let kept = digest_file(path);
    if let Ok(text) = std::fs::read_to_string(&kept)
        && text.len() == 64
    {
        return Ok(text);
    }
    let mut hash = Sha256::new();
    io::copy(&mut std::fs::File::open(path)?, &mut hash)?;
    let sha = hex::encode(hash.finalize());
    write_private(&kept, sha.as_bytes())?;
    Ok(sha)
}

/// Deletes a bundle and what is kept beside it.
pub fn delete(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    match std::fs::remove_file(digest_file(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Bytes a tree takes (files' lengths): what a bundle of it may need at most.
pub fn tree_size(path: &Path) -> io::Result<u64> {
    let metadata = std::fs::symlink_metadata(path)?;
    if !metadata.is_dir() {
        return Ok(metadata.len());
    }
    let mut total = 4096;
    for entry in std::fs::read_dir(path)? {
        total += tree_size(&entry?.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            app_id: "blog".into(),
            app_name: "wordpress".into(),
            app_version: "6.8".into(),
            created: "2026-01-02T03:04:05.678Z".into(),
            http_port: 9001,
            app_toml: "name = \"wordpress\"".into(),
            compose_yaml: "services: {}".into(),
            images: vec![PinnedImage {
                reference: "wordpress:6.8".into(),
                digest: "sha256:00".into(),
            }],
            credentials: Credentials {
                app_name: "wordpress".into(),
                password: "secret".into(),
            },
            include_images: false,
        }
    }

    #[test]
    fn names() {
        let name = bundle_name("blog", std::time::UNIX_EPOCH);
        assert_eq!(name, "blog-19700101T000000.000Z.tar.zst");
        assert!(is_bundle_name(&name));
        for bad in [
            "../x.tar.zst",
            ".x.tar.zst",
            ".tar.zst",
            "x.tar",
            "a/b.tar.zst",
        ] {
            assert!(!is_bundle_name(bad), "{bad}");
        }
    }

    /// Owners, modes, symlinks and extended attributes survive a round trip; the file
    /// is 0600 and its listing matches what was written.
    #[test]
    fn round_trip_keeps_owners_modes_and_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("db/sub")).unwrap();
        std::fs::write(data.join("db/sub/file"), b"hello").unwrap();
        std::fs::set_permissions(data.join("db/sub/file"), PermissionsExt::from_mode(0o640))
            .unwrap();
        std::fs::set_permissions(data.join("db"), PermissionsExt::from_mode(0o710)).unwrap();
        std::os::unix::fs::symlink("sub/file", data.join("db/link")).unwrap();
        let owned = nix::unistd::chown(
            &data.join("db/sub/file"),
            Some(nix::unistd::Uid::from_raw(999)),
            Some(nix::unistd::Gid::from_raw(998)),
        )
        .is_ok();
        let with_xattr = xattr::set(data.join("db/sub/file"), "user.appunit", b"kept").is_ok();
        let path = dir
            .path()
            .join(bundle_name("blog", std::time::SystemTime::now()));
        let contents = Contents {
            data: &data,
            images: None,
        };
        let (size, sha) = write(&path, &manifest(), &contents).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_manifest(&path).unwrap(), manifest());
        let listed = list(dir.path(), None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].size_bytes, &listed[0].sha256), (size, &sha));
        assert!(list(dir.path(), Some("other")).unwrap().is_empty());

        let out = dir.path().join("out");
        unpack(&path, &out).unwrap();
        let out = out.join("data");
        let file = out.join("db/sub/file");
        assert_eq!(std::fs::read(&file).unwrap(), b"hello");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!(
            std::fs::metadata(out.join("db")).unwrap().mode() & 0o777,
            0o710
        );
        assert_eq!(
            std::fs::read_link(out.join("db/link")).unwrap(),
            Path::new("sub/file")
        );
        if owned {
            assert_eq!((meta.uid(), meta.gid()), (999, 998));
        }
        if with_xattr {
            assert_eq!(
                xattr::get(&file, "user.appunit").unwrap().as_deref(),
                Some(&b"kept"[..])
            );
        }
        delete(&path).unwrap();
        assert!(list(dir.path(), None).unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "data and out"
        );
    }

    /// A backup cut by a crash: its work files and digest go, another bundle's stay.
    #[test]
    fn cleaning_after_a_cut_backup_keeps_other_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("blog-1.tar.zst");
        std::fs::write(work_path(&bundle, "partial"), b"half").unwrap();
        std::fs::write(work_path(&bundle, "stopped"), b"").unwrap();
        std::fs::create_dir_all(work_path(&bundle, "images").join("blobs")).unwrap();
        std::fs::write(digest_file(&bundle), b"00").unwrap();
        let other = dir.path().join("blog-2.tar.zst");
        std::fs::write(work_path(&other, "partial"), b"other").unwrap();
        assert!(!clean_after(&bundle).unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [".blog-2.tar.zst.partial"]);
        std::fs::write(&other, b"whole").unwrap();
        assert!(clean_after(&other).unwrap());
        assert!(other.exists());
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blog-1.tar.zst");
        let contents = Contents {
            data: &dir.path().join("missing"),
            images: None,
        };
        assert!(write(&path, &manifest(), &contents).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
