//! Named volumes start with what the image has at their path, as Docker's do: an
//! image's default site, its config folder or its data folder owned by the app's user
//! would otherwise be hidden by an empty folder.

use super::plan::VolumeSeed;
use crate::runtime::containerd::Containerd;
use containerd_client::types::Mount;
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

/// Fills `seed.folder` from the image when it is missing or empty; a folder with
/// anything in it (kept data of an earlier install) is left as it is. `scratch` is a
/// folder for the temporary mount.
pub async fn seed(
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
    let key = format!("seed-{:016x}", rand::random::<u64>());
    let lease = containerd
        .create_lease("seed")
        .await
        .map_err(|e| e.to_string())?;
    let mount_point = scratch.join(&key);
    let seeded = match containerd.view_snapshot(&lease, &key, &seed.chain_id).await {
        Ok(mounts) => copy_from_view(&mounts, &mount_point, seed),
        Err(err) => Err(err.to_string()),
    };
    containerd.remove_snapshot(&key).await;
    let released = containerd.release_lease(lease, false).await;
    seeded.and(released.map_err(|e| e.to_string()))
}

fn copy_from_view(mounts: &[Mount], mount_point: &Path, seed: &VolumeSeed) -> Result<(), String> {
    std::fs::create_dir_all(mount_point).map_err(|e| format!("{}: {e}", mount_point.display()))?;
    let copied = mount_all(mounts, mount_point).and_then(|()| {
        let source = mount_point.join(seed.path.strip_prefix("/").unwrap_or(&seed.path));
        if source.is_dir() {
            copy_tree(&source, &seed.folder)
        } else {
            Ok(())
        }
    });
    let _ = nix::mount::umount2(mount_point, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(mount_point);
    copied
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
