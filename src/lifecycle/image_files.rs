//! What the creating phase reads from an image's files, through a read-only view of its
//! root file system: the initial content of named volumes, and the accounts that user
//! names resolve in.

use crate::app::plan::VolumeSeed;
use crate::runtime::containerd::Containerd;
use crate::runtime::oci::Accounts;
use containerd_client::types::Mount;
use nix::mount::{MntFlags, MsFlags};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Named volumes start with what the image has at their path, as Docker's do (an
/// image's default site, or a data folder owned by the app's user, would otherwise be
/// hidden). Only a missing or empty folder is filled: kept data is used as it is.
pub async fn seed_volume(
    containerd: &Containerd,
    seed: &VolumeSeed,
    scratch: &Path,
) -> Result<(), String> {
    let empty = match std::fs::read_dir(&seed.folder) {
        Ok(mut entries) => entries.next().is_none(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
        Err(err) => return Err(format!("{}: {err}", seed.folder.display())),
    };
    if !empty {
        return Ok(());
    }
    let (path, folder) = (seed.path.clone(), seed.folder.clone());
    with_image_root(containerd, &seed.chain_id, scratch, move |root| {
        let source = resolve_in_root(root, &path)?;
        // Not `is_dir`, which follows links: `source` has none left, and must not.
        match std::fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_dir() => copy_tree(&source, &folder),
            _ => Ok(()),
        }
    })
    .await
}

/// The image's /etc/passwd and /etc/group (empty when it has none).
pub async fn read_accounts(
    containerd: &Containerd,
    chain_id: &str,
    scratch: &Path,
) -> Result<Accounts, String> {
    with_image_root(containerd, chain_id, scratch, |root| {
        let read = |file: &str| {
            resolve_in_root(root, Path::new(file))
                .and_then(|path| std::fs::read_to_string(path).map_err(|e| e.to_string()))
                .unwrap_or_default()
        };
        Ok(Accounts {
            passwd: read("/etc/passwd"),
            group: read("/etc/group"),
        })
    })
    .await
}

/// Symbolic links followed within one path, as Linux's limit.
const MAX_LINKS: u32 = 40;

/// `path` as the container would see it in the image's root file system `root`: every
/// symbolic link on the way resolves against `root`, and `..` stops at it, so that an
/// image can never point the daemon at the host's files (an absolute link to `/etc`
/// is the image's /etc). Missing parts are kept as they are: the result is then
/// missing too.
fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let mut resolved = PathBuf::new();
    let mut pending = names(path);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let on_host = root.join(&candidate);
        let is_link =
            std::fs::symlink_metadata(&on_host).is_ok_and(|meta| meta.file_type().is_symlink());
        if !is_link {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(format!("{}: too many symbolic links", path.display()));
        }
        let target =
            std::fs::read_link(&on_host).map_err(|e| format!("{}: {e}", candidate.display()))?;
        if target.has_root() {
            resolved = PathBuf::new();
        }
        let mut next = names(&target);
        next.extend(pending);
        pending = next;
    }
    Ok(root.join(resolved))
}

/// A path's names and `..`s, in order (`/` and `.` say nothing here).
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Runs `read` on the image's root file system (the snapshot `chain_id`), mounted
/// read-only under `scratch` for that time, on a blocking thread: copies can be large.
async fn with_image_root<T: Send + 'static>(
    containerd: &Containerd,
    chain_id: &str,
    scratch: &Path,
    read: impl FnOnce(&Path) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let key = format!("image-files-{:016x}", rand::random::<u64>());
    let lease = containerd
        .create_lease("image-files")
        .await
        .map_err(|e| e.to_string())?;
    let mount_point = scratch.join(&key);
    let result = match containerd.view_snapshot(&lease, &key, chain_id).await {
        Ok(mounts) => tokio::task::spawn_blocking(move || mounted(&mounts, &mount_point, read))
            .await
            .unwrap_or_else(|e| Err(format!("reading the image's files: {e}"))),
        Err(err) => Err(err.to_string()),
    };
    containerd.remove_snapshot(&key).await;
    let released = containerd.release_lease(lease, false).await;
    let value = result?;
    released.map_err(|e| e.to_string())?;
    Ok(value)
}

fn mounted<T>(
    mounts: &[Mount],
    mount_point: &Path,
    read: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    std::fs::create_dir_all(mount_point).map_err(|e| format!("{}: {e}", mount_point.display()))?;
    let result = mount_all(mounts, mount_point).and_then(|()| read(mount_point));
    let _ = nix::mount::umount2(mount_point, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(mount_point);
    result
}

/// The mounts containerd gives for a view: one bind (a single layer) or one overlay.
fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), String> {
    for mount in mounts {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for option in &mount.options {
            match option.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "rw" => {}
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                other => data.push(other),
            }
        }
        nix::mount::mount(
            Some(mount.source.as_str()),
            target,
            Some(mount.r#type.as_str()),
            flags,
            Some(data.join(",").as_str()),
        )
        .map_err(|e| {
            format!(
                "mounting the image ({} {}): {e}",
                mount.r#type, mount.source
            )
        })?;
    }
    Ok(())
}

/// Copies with owners, modes, links and extended attributes (`cp -a`), into a staging
/// folder first: a copy cut short never passes for a filled volume.
fn copy_tree(source: &Path, folder: &Path) -> Result<(), String> {
    let name = folder.file_name().unwrap_or_default().to_string_lossy();
    let staging = folder.with_file_name(format!(".{name}.seeding"));
    let _ = std::fs::remove_dir_all(&staging);
    let output = std::process::Command::new("cp")
        .arg("-a")
        .arg(source.join("."))
        .arg(&staging)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!(
            "copying {} into the volume: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let _ = std::fs::remove_dir(folder);
    std::fs::rename(&staging, folder).map_err(|e| format!("{}: {e}", folder.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_resolve_inside_the_image_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for folder in ["etc/app", "srv/data", "var"] {
            std::fs::create_dir_all(root.join(folder)).unwrap();
        }
        let inside = |path: &str| root.join(path);
        // Absolute and relative links to /etc, and ..s past the root, all stay in it.
        symlink("/etc", inside("srv/abs")).unwrap();
        symlink("../../../../../../etc", inside("srv/rel")).unwrap();
        symlink("data", inside("srv/sibling")).unwrap();
        symlink("/srv/abs/app", inside("var/chain")).unwrap();
        symlink("loop", inside("var/loop")).unwrap();
        let resolve = |path: &str| resolve_in_root(&root, Path::new(path)).unwrap();
        assert_eq!(resolve("/srv/abs"), inside("etc"));
        assert_eq!(resolve("/srv/rel"), inside("etc"));
        assert_eq!(resolve("/srv/abs/app"), inside("etc/app"));
        assert_eq!(resolve("/var/chain"), inside("etc/app"));
        assert_eq!(resolve("/srv/sibling"), inside("srv/data"));
        assert_eq!(resolve("/../../etc/./app"), inside("etc/app"));
        assert_eq!(resolve("/srv/missing/x"), inside("srv/missing/x"));
        assert!(resolve_in_root(&root, Path::new("/var/loop")).is_err());
    }
}
