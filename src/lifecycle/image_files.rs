//! What the creating phase reads from an image's files, through a read-only view of its
//! root file system: the initial content of named volumes, and the accounts that user
//! names resolve in.

use crate::app::plan::VolumeSeed;
use crate::runtime::containerd::Containerd;
use crate::runtime::oci::Accounts;
use containerd_client::types::Mount;
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

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
        let source = root.join(path.strip_prefix("/").unwrap_or(&path));
        if source.is_dir() {
            copy_tree(&source, &folder)
        } else {
            Ok(())
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
        let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_default();
        Ok(Accounts {
            passwd: read("etc/passwd"),
            group: read("etc/group"),
        })
    })
    .await
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
