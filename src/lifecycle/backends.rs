//! What the lifecycle asks of the host, as four small traits: the image source, the
//! container runtime, the unit manager and the app network. The real ones connect on
//! first use (and again after a failure), so the API answers while containerd or
//! systemd is down; tests put fakes in their place.

use super::image_files;
use crate::app::plan::{ContainerToCreate, VolumeSeed};
use crate::app::slice_name;
use crate::config::{Config, RegistryConfig};
use crate::images::progress::Progress;
use crate::images::{PullError, PulledImage, Puller};
use crate::runtime::containerd::{APP_LABEL, AppContainer, Containerd, ContainerdError};
use crate::runtime::net::{NetError, Network};
use crate::runtime::oci::Accounts;
use crate::runtime::systemd::{Systemd, SystemdError, UnitStatus, Usage};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

#[async_trait]
pub trait ImageSource: Send + Sync {
    /// Pulls every image (each once) with one progress across them; with
    /// `local_first`, images already wholly here are not asked of any registry.
    async fn pull_all(
        &self,
        references: &[String],
        progress: &Arc<Progress>,
        local_first: bool,
    ) -> Result<Vec<PulledImage>, PullError>;
    /// Writes the images as they are here into an OCI image layout folder.
    async fn export_layout(&self, references: &[String], layout: &Path) -> Result<(), PullError> {
        Err(PullError::Unsupported {
            image: references.join(", "),
            cause: format!("no image layout is written here ({})", layout.display()),
        })
    }
    /// Reads an OCI image layout folder in, unpacked; the names of its images.
    async fn import_layout(&self, layout: &Path) -> Result<Vec<String>, PullError> {
        Err(PullError::Unsupported {
            image: layout.display().to_string(),
            cause: "no image layout is read here".into(),
        })
    }
    /// Removes an image unless another app's container uses it; whether it went.
    async fn remove_unless_used(&self, image: &str, app_id: &str) -> Result<bool, PullError>;
    /// Holds what the image name points at now under a second name of `app_id`'s, so
    /// that an upgrade's pull that moves the tag can be undone. A source whose tags
    /// never move (the fakes) has nothing to hold.
    async fn hold(&self, _image: &str, _app_id: &str) -> Result<(), PullError> {
        Ok(())
    }
    /// Drops the hold; with `restore`, the name points at what was held again first.
    async fn release_hold(
        &self,
        _image: &str,
        _app_id: &str,
        _restore: bool,
    ) -> Result<(), PullError> {
        Ok(())
    }
}

#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Leases of pulls that a crash interrupted; how many were released.
    async fn release_stale_leases(&self) -> Result<usize, ContainerdError>;
    /// Creates the container for `app_id`, replacing one an interrupted attempt left.
    async fn create_container(
        &self,
        app_id: &str,
        container: &ContainerToCreate,
    ) -> Result<(), ContainerdError>;
    /// Removes a container with its task and snapshot; one already gone is fine.
    async fn delete_container(&self, id: &str) -> Result<(), ContainerdError>;
    /// appunit's containers: those of one app, or of every app.
    async fn app_containers(
        &self,
        app_id: Option<&str>,
    ) -> Result<Vec<AppContainer>, ContainerdError>;
    /// The accounts of the image whose top snapshot is `chain_id`.
    async fn read_accounts(&self, chain_id: &str) -> Result<Accounts, String>;
    /// Fills an empty named volume with what the image has at its path.
    async fn seed_volume(&self, seed: &VolumeSeed) -> Result<(), String>;
}

#[async_trait]
pub trait UnitManager: Send + Sync {
    async fn install_unit(&self, unit: &str, text: &str) -> Result<(), SystemdError>;
    /// Stops, disables and deletes the unit; one never written is fine.
    async fn remove_unit(&self, unit: &str) -> Result<(), SystemdError>;
    async fn enable(&self, unit: &str) -> Result<(), SystemdError>;
    async fn disable(&self, unit: &str) -> Result<(), SystemdError>;
    /// Each job returns once the unit reached its state, or with why it did not.
    async fn start(&self, unit: &str) -> Result<(), SystemdError>;
    async fn stop(&self, unit: &str) -> Result<(), SystemdError>;
    async fn restart(&self, unit: &str) -> Result<(), SystemdError>;
    async fn status(&self, unit: &str) -> Result<UnitStatus, SystemdError>;
    async fn slice_usage(&self, slice: &str) -> Result<Usage, SystemdError>;
    /// The names of units as systemd reports their state changing.
    async fn unit_changes(&self) -> Result<BoxStream<'static, String>, SystemdError>;
    /// Whether an app unit's cgroup has processes, as the kernel says now; None when
    /// it cannot tell.
    fn populated(&self, _unit: &str) -> Option<bool> {
        None
    }
}

/// Blocking (it runs `ip` and the CNI plugins): called from `spawn_blocking`.
pub trait AppNetwork: Send + Sync {
    /// Unpublishes the app's ports and removes its namespace.
    fn release(&self, app_id: &str) -> Result<(), NetError>;
}

/// The annotation by which containerd's runc v2 shim groups containers.
const SHIM_GROUP: &str = "io.containerd.runc.v2.group";

#[derive(Clone)]
pub struct Backends {
    pub images: Arc<dyn ImageSource>,
    pub containers: Arc<dyn ContainerRuntime>,
    pub units: Arc<dyn UnitManager>,
    pub network: Arc<dyn AppNetwork>,
}

impl Backends {
    /// The host's containerd, systemd and CNI plugins, as the configuration names them.
    pub fn real(config: &Config) -> Backends {
        let containerd = Arc::new(ContainerdBackend {
            socket: config.containerd_socket.clone(),
            namespace: config.containerd_namespace.clone(),
            registries: config.registries.clone(),
            scratch: config.run_dir().to_path_buf(),
            connected: tokio::sync::Mutex::new(None),
        });
        Backends {
            images: containerd.clone(),
            containers: containerd,
            units: Arc::new(SystemdBackend {
                unit_dir: config.unit_dir.clone(),
                connected: tokio::sync::Mutex::new(None),
            }),
            network: Arc::new(config.network()),
        }
    }
}

struct ContainerdBackend {
    socket: PathBuf,
    namespace: String,
    registries: BTreeMap<String, RegistryConfig>,
    /// Where image views are mounted while their files are read.
    scratch: PathBuf,
    connected: tokio::sync::Mutex<Option<(Containerd, Puller)>>,
}

impl ContainerdBackend {
    async fn connection(&self) -> Result<(Containerd, Puller), ContainerdError> {
        let mut connected = self.connected.lock().await;
        if let Some(connection) = connected.as_ref() {
            return Ok(connection.clone());
        }
        let containerd = Containerd::connect(&self.socket, &self.namespace).await?;
        let puller = Puller::new(containerd.clone(), self.registries.clone());
        *connected = Some((containerd.clone(), puller.clone()));
        Ok((containerd, puller))
    }

    async fn containerd(&self) -> Result<Containerd, ContainerdError> {
        Ok(self.connection().await?.0)
    }

    async fn puller(&self, images: &[String]) -> Result<Puller, PullError> {
        self.connection()
            .await
            .map(|(_, puller)| puller)
            .map_err(|source| PullError::Containerd {
                image: images.join(", "),
                source,
            })
    }
}

#[async_trait]
impl ImageSource for ContainerdBackend {
    async fn pull_all(
        &self,
        references: &[String],
        progress: &Arc<Progress>,
        local_first: bool,
    ) -> Result<Vec<PulledImage>, PullError> {
        self.puller(references)
            .await?
            .pull_all_from(references, progress, local_first)
            .await
    }

    async fn export_layout(&self, references: &[String], layout: &Path) -> Result<(), PullError> {
        self.puller(references)
            .await?
            .export_layout(references, layout)
            .await
    }

    async fn import_layout(&self, layout: &Path) -> Result<Vec<String>, PullError> {
        self.puller(&[layout.display().to_string()])
            .await?
            .import_layout(layout)
            .await
    }

    async fn remove_unless_used(&self, image: &str, app_id: &str) -> Result<bool, PullError> {
        self.puller(&[image.to_string()])
            .await?
            .remove_unless_used(image, app_id)
            .await
    }

    async fn hold(&self, image: &str, app_id: &str) -> Result<(), PullError> {
        let (name, keeper) = hold_names(image, app_id)?;
        let failed = |source| PullError::Containerd {
            image: name.clone(),
            source,
        };
        let containerd = self.containerd().await.map_err(failed)?;
        if let Some(target) = containerd.image_target(&name).await.map_err(failed)? {
            containerd
                .put_image(&keeper, target)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    async fn release_hold(
        &self,
        image: &str,
        app_id: &str,
        restore: bool,
    ) -> Result<(), PullError> {
        let (name, keeper) = hold_names(image, app_id)?;
        let failed = |source| PullError::Containerd {
            image: name.clone(),
            source,
        };
        let containerd = self.containerd().await.map_err(failed)?;
        if let Some(target) = containerd.image_target(&keeper).await.map_err(failed)? {
            if restore {
                containerd.put_image(&name, target).await.map_err(failed)?;
            }
            containerd.delete_image(&keeper).await.map_err(failed)?;
        }
        Ok(())
    }
}

/// An image's name in containerd, and the name an upgrade of `app_id` holds it under.
fn hold_names(image: &str, app_id: &str) -> Result<(String, String), PullError> {
    let name = image
        .parse::<oci_client::Reference>()
        .map_err(|e| PullError::Reference {
            image: image.to_string(),
            cause: e.to_string(),
        })?
        .whole();
    let keeper = format!("appunit-rollback/{app_id}/{name}");
    Ok((name, keeper))
}

#[async_trait]
impl ContainerRuntime for ContainerdBackend {
    async fn release_stale_leases(&self) -> Result<usize, ContainerdError> {
        self.containerd().await?.release_stale_leases().await
    }

    async fn create_container(
        &self,
        app_id: &str,
        container: &ContainerToCreate,
    ) -> Result<(), ContainerdError> {
        let containerd = self.containerd().await?;
        containerd.delete_container(&container.id).await?;
        let labels = HashMap::from([(APP_LABEL.to_string(), app_id.to_string())]);
        // The runc v2 shim serves every container of a group: one shim per app, not one
        // per container (each costs a dozen MB).
        let mut spec = container.spec.clone();
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        annotations.insert(SHIM_GROUP.to_string(), app_id.to_string());
        spec.set_annotations(Some(annotations));
        containerd
            .create_container(
                &container.id,
                &container.image,
                &container.chain_id,
                &spec,
                labels,
            )
            .await
    }

    async fn delete_container(&self, id: &str) -> Result<(), ContainerdError> {
        self.containerd().await?.delete_container(id).await
    }

    async fn app_containers(
        &self,
        app_id: Option<&str>,
    ) -> Result<Vec<AppContainer>, ContainerdError> {
        self.containerd().await?.app_containers(app_id).await
    }

    async fn read_accounts(&self, chain_id: &str) -> Result<Accounts, String> {
        let containerd = self.containerd().await.map_err(|e| e.to_string())?;
        image_files::read_accounts(&containerd, chain_id, &self.scratch).await
    }

    async fn seed_volume(&self, seed: &VolumeSeed) -> Result<(), String> {
        let containerd = self.containerd().await.map_err(|e| e.to_string())?;
        image_files::seed_volume(&containerd, seed, &self.scratch).await
    }
}

struct SystemdBackend {
    unit_dir: PathBuf,
    connected: tokio::sync::Mutex<Option<Arc<Systemd>>>,
}

impl SystemdBackend {
    async fn systemd(&self) -> Result<Arc<Systemd>, SystemdError> {
        let mut connected = self.connected.lock().await;
        if let Some(systemd) = connected.as_ref() {
            return Ok(systemd.clone());
        }
        let systemd = Arc::new(Systemd::connect(None, self.unit_dir.clone()).await?);
        *connected = Some(systemd.clone());
        Ok(systemd)
    }
}

#[async_trait]
impl UnitManager for SystemdBackend {
    async fn install_unit(&self, unit: &str, text: &str) -> Result<(), SystemdError> {
        self.systemd().await?.install_unit(unit, text).await
    }

    async fn remove_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.systemd().await?.remove_unit(unit).await
    }

    async fn enable(&self, unit: &str) -> Result<(), SystemdError> {
        self.systemd().await?.enable(unit).await
    }

    async fn disable(&self, unit: &str) -> Result<(), SystemdError> {
        self.systemd().await?.disable(unit).await
    }

    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.systemd().await?.start(unit).await
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.systemd().await?.stop(unit).await
    }

    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.systemd().await?.restart(unit).await
    }

    async fn status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        self.systemd().await?.status(unit).await
    }

    async fn slice_usage(&self, slice: &str) -> Result<Usage, SystemdError> {
        self.systemd().await?.slice_usage(slice).await
    }

    async fn unit_changes(&self) -> Result<BoxStream<'static, String>, SystemdError> {
        Ok(self.systemd().await?.unit_changes().await?.boxed())
    }

    /// `appunit-<id>.service` runs in `appunit-<id>.slice`, which systemd nests in
    /// `appunit.slice`, in the unified (v2) hierarchy: /sys/fs/cgroup, or its `unified`
    /// folder on a host that mounts v1 beside it. No slice's cgroup: not systemd's
    /// cgroup tree as expected here.
    fn populated(&self, unit: &str) -> Option<bool> {
        static UNIFIED: OnceLock<Option<PathBuf>> = OnceLock::new();
        let unified = UNIFIED.get_or_init(|| {
            ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
                .map(PathBuf::from)
                .into_iter()
                .find(|root| root.join("cgroup.procs").exists())
        });
        let app_id = unit.strip_prefix("appunit-")?.strip_suffix(".service")?;
        let slice = unified
            .as_ref()?
            .join("appunit.slice")
            .join(slice_name(app_id));
        match std::fs::read_to_string(slice.join(unit).join("cgroup.events")) {
            Ok(events) => Some(events.lines().any(|line| line == "populated 1")),
            Err(_) if slice.is_dir() => Some(false),
            Err(_) => None,
        }
    }
}

impl AppNetwork for Network {
    fn release(&self, app_id: &str) -> Result<(), NetError> {
        Network::release(self, app_id)
    }
}
