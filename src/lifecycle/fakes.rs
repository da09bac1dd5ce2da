//! In-memory backends for the lifecycle's unit tests: they keep what a real host would
//! (images, containers, units, namespaces), record every call, can be taken down, and
//! yield a random number of times per call so that concurrent work interleaves anew
//! in every run.

use super::backends::{AppNetwork, Backends, ContainerRuntime, ImageSource, UnitManager};
use crate::app::plan::{ContainerToCreate, VolumeSeed};
use crate::images::progress::Progress;
use crate::images::{PullError, PulledImage};
use crate::runtime::containerd::{AppContainer, ContainerdError};
use crate::runtime::net::NetError;
use crate::runtime::oci::{Accounts, ImageConfig};
use crate::runtime::systemd::{SystemdError, UnitState, UnitStatus, Usage};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct World {
    pub calls: Vec<String>,
    pub images: BTreeSet<String>,
    /// Container id → its app.
    pub containers: BTreeMap<String, String>,
    /// Unit name → running.
    pub units: BTreeMap<String, bool>,
    pub namespaces: BTreeSet<String>,
    /// The slices whose usage was read, a name per read.
    pub usage_reads: Vec<String>,
}

pub struct FakeHost {
    pub world: Mutex<World>,
    pub containerd_down: AtomicBool,
    pub pulls_fail: AtomicBool,
    pub creates_fail: AtomicBool,
    rng: Mutex<StdRng>,
}

impl FakeHost {
    pub fn new(seed: u64) -> Arc<FakeHost> {
        Arc::new(FakeHost {
            world: Mutex::default(),
            containerd_down: AtomicBool::new(false),
            pulls_fail: AtomicBool::new(false),
            creates_fail: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        })
    }

    pub fn backends(self: &Arc<Self>) -> Backends {
        Backends {
            images: self.clone(),
            containers: self.clone(),
            units: self.clone(),
            network: self.clone(),
        }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// Everything of the app on the "host": containers, units, namespaces.
    pub fn leftovers(&self, app_id: &str) -> Vec<String> {
        let world = self.world();
        let unit = crate::app::unit_name(app_id);
        world
            .containers
            .iter()
            .filter(|(_, app)| *app == app_id)
            .map(|(id, _)| format!("container {id}"))
            .chain(world.units.keys().filter(|u| **u == unit).cloned())
            .chain(world.namespaces.iter().filter(|n| *n == app_id).cloned())
            .collect()
    }

    /// Records the call, then lets other tasks run a random number of times.
    async fn call(&self, what: String) {
        let yields = self.rng.lock().unwrap().random_range(0..4);
        self.world().calls.push(what);
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    }

    fn containerd(&self) -> Result<(), ContainerdError> {
        if self.containerd_down.load(Ordering::SeqCst) {
            return Err(ContainerdError::Unreachable {
                socket: "/run/containerd/containerd.sock".into(),
                cause: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ImageSource for FakeHost {
    async fn pull_all(
        &self,
        references: &[String],
        progress: &Arc<Progress>,
        _local_first: bool,
    ) -> Result<Vec<PulledImage>, PullError> {
        self.call(format!("pull {}", references.join(" "))).await;
        let image = references.join(", ");
        self.containerd().map_err(|source| PullError::Containerd {
            image: image.clone(),
            source,
        })?;
        if self.pulls_fail.load(Ordering::SeqCst) {
            return Err(PullError::Registry {
                image,
                cause: "manifest unknown".into(),
            });
        }
        progress.add_total(1);
        self.call("pulled".into()).await;
        self.world().images.extend(references.iter().cloned());
        Ok(references
            .iter()
            .map(|name| PulledImage {
                name: name.clone(),
                digest: "sha256:fake".into(),
                config: ImageConfig {
                    cmd: vec!["serve".into()],
                    ..ImageConfig::default()
                },
                chain_id: "sha256:chain".into(),
            })
            .collect())
    }

    async fn remove_unless_used(&self, image: &str, _app_id: &str) -> Result<bool, PullError> {
        self.call(format!("remove image {image}")).await;
        Ok(self.world().images.remove(image))
    }
}

#[async_trait]
impl ContainerRuntime for FakeHost {
    async fn release_stale_leases(&self) -> Result<usize, ContainerdError> {
        self.containerd()?;
        Ok(0)
    }

    async fn create_container(
        &self,
        app_id: &str,
        container: &ContainerToCreate,
    ) -> Result<(), ContainerdError> {
        self.call(format!("create {}", container.id)).await;
        self.containerd()?;
        if self.creates_fail.load(Ordering::SeqCst) {
            return Err(ContainerdError::Call {
                call: "Containers.Create",
                status: tonic::Status::resource_exhausted("no space left on device"),
            });
        }
        self.world()
            .containers
            .insert(container.id.clone(), app_id.to_string());
        Ok(())
    }

    async fn delete_container(&self, id: &str) -> Result<(), ContainerdError> {
        self.call(format!("delete {id}")).await;
        self.containerd()?;
        self.world().containers.remove(id);
        Ok(())
    }

    async fn app_containers(
        &self,
        app_id: Option<&str>,
    ) -> Result<Vec<AppContainer>, ContainerdError> {
        self.call("list containers".into()).await;
        self.containerd()?;
        Ok(self
            .world()
            .containers
            .iter()
            .filter(|(_, app)| app_id.is_none_or(|id| id == *app))
            .map(|(id, app)| AppContainer {
                id: id.clone(),
                image: "reg/image:1".into(),
                app_id: app.clone(),
            })
            .collect())
    }

    async fn read_accounts(&self, _chain_id: &str) -> Result<Accounts, String> {
        Ok(Accounts::default())
    }

    async fn seed_volume(&self, seed: &VolumeSeed) -> Result<(), String> {
        self.call(format!("seed {}", seed.path.display())).await;
        Ok(())
    }
}

#[async_trait]
impl UnitManager for FakeHost {
    async fn install_unit(&self, unit: &str, _text: &str) -> Result<(), SystemdError> {
        self.call(format!("install {unit}")).await;
        self.world().units.insert(unit.to_string(), false);
        Ok(())
    }

    async fn remove_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("remove {unit}")).await;
        self.world().units.remove(unit);
        Ok(())
    }

    async fn enable(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("enable {unit}")).await;
        Ok(())
    }

    async fn disable(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("disable {unit}")).await;
        Ok(())
    }

    /// Starting a unit runs its supervisor, which makes the app's namespace.
    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("start {unit}")).await;
        let mut world = self.world();
        let Some(running) = world.units.get_mut(unit) else {
            return Err(SystemdError::Job {
                unit: unit.into(),
                job: "start",
                result: "not-found".into(),
            });
        };
        *running = true;
        let app_id = unit_app(unit);
        world.namespaces.insert(app_id);
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("stop {unit}")).await;
        if let Some(running) = self.world().units.get_mut(unit) {
            *running = false;
        }
        Ok(())
    }

    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.stop(unit).await?;
        self.start(unit).await
    }

    async fn status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let running = self.world().units.get(unit).copied().unwrap_or(false);
        Ok(UnitStatus {
            state: if running {
                UnitState::Active
            } else {
                UnitState::Inactive
            },
            auto_restart: false,
            status_text: String::new(),
        })
    }

    /// An app's memory grows by a byte at each read: every read is a new figure.
    async fn slice_usage(&self, slice: &str) -> Result<Usage, SystemdError> {
        let mut world = self.world();
        world.usage_reads.push(slice.to_owned());
        let reads = world
            .usage_reads
            .iter()
            .filter(|read| *read == slice)
            .count();
        Ok(Usage {
            memory_bytes: reads as u64,
            ..Usage::default()
        })
    }

    async fn unit_changes(&self) -> Result<BoxStream<'static, String>, SystemdError> {
        Ok(futures_util::stream::pending().boxed())
    }
}

impl AppNetwork for FakeHost {
    fn release(&self, app_id: &str) -> Result<(), NetError> {
        let mut world = self.world();
        world.calls.push(format!("release network {app_id}"));
        world.namespaces.remove(app_id);
        Ok(())
    }
}

fn unit_app(unit: &str) -> String {
    unit.trim_start_matches("appunit-")
        .trim_end_matches(".service")
        .to_string()
}
