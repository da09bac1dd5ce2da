//! containerd over gRPC: content, snapshots, diff, images and leases, in appunit's
//! namespace. Every call that creates something can run under a lease, so that a
//! failed or interrupted operation leaves nothing for garbage collection to keep.

use crate::error::error_chain;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    AbortRequest, ApplyRequest, Container, CreateContainerRequest, CreateImageRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteImageRequest, DeleteProcessRequest,
    DeleteTaskRequest, ExecProcessRequest, GetImageRequest, GetRequest, Image, InfoRequest,
    KillRequest, ListContainersRequest, ReadContentRequest, StartRequest, UpdateImageRequest,
    WaitRequest, WriteAction, WriteContentRequest, containers_client::ContainersClient,
    content_client::ContentClient, diff_client::DiffClient, images_client::ImagesClient,
    leases_client::LeasesClient, tasks_client::TasksClient, version_client::VersionClient,
};
use containerd_client::types::{Descriptor, Mount};
use containerd_client::{services::v1 as api, tonic};
use std::collections::HashMap;
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The snapshotter appunit unpacks into (containerd's default on Linux).
pub const SNAPSHOTTER: &str = "overlayfs";

/// The runtime shim of app containers.
const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// runc's shim options; containerd-client does not ship this message. Only the systemd
/// cgroup driver is set: the app's containers then live in the app's slice.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(bool, tag = "9")]
    systemd_cgroup: bool,
}

/// Leases expire by themselves after this long, in case the daemon dies mid-operation.
const LEASE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd is not reachable at {socket}: {cause}")]
    Unreachable { socket: String, cause: String },
    #[error("containerd {version} is too old: appunit needs 1.6 or newer")]
    TooOld { version: String },
    #[error("containerd {call}: {status}", status = .status.message())]
    Call { call: &'static str, status: Status },
}

impl ContainerdError {
    pub fn code(&self) -> Option<Code> {
        match self {
            ContainerdError::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, ContainerdError>;

/// A call whose NotFound means "there is none": for lookups, and for removing what
/// may be gone already.
fn unless_missing<T>(
    result: std::result::Result<tonic::Response<T>, Status>,
    name: &'static str,
) -> Result<Option<T>> {
    match result {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(call(name)(status)),
    }
}

fn call(name: &'static str) -> impl Fn(Status) -> ContainerdError {
    move |status| ContainerdError::Call { call: name, status }
}

#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

/// Containers carry their app's id under this label.
pub const APP_LABEL: &str = "appunit.app";

/// A container of an app, as containerd lists it.
pub struct AppContainer {
    pub id: String,
    pub image: String,
    pub app_id: String,
}

/// A container's task as containerd knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskState {
    pub pid: u32,
    pub running: bool,
}

/// A lease: what is created under it is kept until it is released.
pub struct Lease {
    pub id: String,
}

/// While set, a content write that has not ended: dropped then, its ingest is aborted.
struct UnfinishedWrite {
    containerd: Option<Containerd>,
    reference: String,
}

impl Drop for UnfinishedWrite {
    fn drop(&mut self) {
        let (Some(containerd), Ok(runtime)) = (
            self.containerd.take(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let abort = AbortRequest {
            r#ref: std::mem::take(&mut self.reference),
        };
        runtime.spawn(async move {
            let aborted = ContentClient::new(containerd.channel.clone())
                .abort(containerd.request(abort, None))
                .await;
            if let Err(err) = unless_missing(aborted, "Content.Abort") {
                tracing::debug!(%err, "aborting a cancelled write");
            }
        });
    }
}

impl Containerd {
    /// Connects and checks the server version.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd> {
        let unreachable = |cause: String| ContainerdError::Unreachable {
            socket: socket.display().to_string(),
            cause,
        };
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let version = VersionClient::new(channel.clone())
            .version(())
            .await
            .map_err(|e| unreachable(e.message().to_string()))?
            .into_inner()
            .version;
        let numbers: Vec<u32> = version
            .trim_start_matches('v')
            .split(['.', '~', '-', '+'])
            .take(2)
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        if numbers.as_slice() < [1, 6].as_slice() {
            return Err(ContainerdError::TooOld { version });
        }
        Ok(Containerd {
            channel,
            namespace: namespace.to_string(),
        })
    }

    /// A request in appunit's namespace, under `lease` when one is given.
    fn request<T>(&self, message: T, lease: Option<&Lease>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        // Namespaces and lease ids are ASCII by construction (config check, our ids).
        if let Ok(namespace) = self.namespace.parse() {
            metadata.insert("containerd-namespace", namespace);
        }
        if let Some(Ok(lease)) = lease.map(|l| l.id.parse()) {
            metadata.insert("containerd-lease", lease);
        }
        request
    }

    pub async fn create_lease(&self, purpose: &str) -> Result<Lease> {
        let expires = std::time::SystemTime::now() + LEASE_EXPIRY;
        let id = format!("appunit-{purpose}-{:016x}", rand::random::<u64>());
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            humantime::format_rfc3339_seconds(expires).to_string(),
        )]);
        let request = api::CreateRequest {
            id: id.clone(),
            labels,
        };
        LeasesClient::new(self.channel.clone())
            .create(self.request(request, None))
            .await
            .map_err(call("Leases.Create"))?;
        Ok(Lease { id })
    }

    /// Releases a lease; with `collect`, garbage collection runs before this returns,
    /// so whatever only the lease held is gone.
    pub async fn release_lease(&self, lease: Lease, collect: bool) -> Result<()> {
        let request = api::DeleteRequest {
            id: lease.id,
            sync: collect,
        };
        LeasesClient::new(self.channel.clone())
            .delete(self.request(request, None))
            .await
            .map_err(call("Leases.Delete"))?;
        Ok(())
    }

    /// Releases the leases appunit made that no operation holds any more: at daemon
    /// start, those of operations a crash interrupted. Collects what they held.
    pub async fn release_stale_leases(&self) -> Result<usize> {
        let request = api::ListRequest { filters: vec![] };
        let leases = LeasesClient::new(self.channel.clone())
            .list(self.request(request, None))
            .await
            .map_err(call("Leases.List"))?
            .into_inner()
            .leases;
        let ours: Vec<String> = leases
            .into_iter()
            .map(|lease| lease.id)
            .filter(|id| id.starts_with("appunit-"))
            .collect();
        for id in &ours {
            self.release_lease(Lease { id: id.clone() }, true).await?;
        }
        Ok(ours.len())
    }

    /// Whether the content store holds a blob.
    pub async fn has_content(&self, digest: &str) -> Result<bool> {
        let request = InfoRequest {
            digest: digest.to_string(),
        };
        Ok(unless_missing(
            ContentClient::new(self.channel.clone())
                .info(self.request(request, None))
                .await,
            "Content.Info",
        )?
        .is_some())
    }

    /// Reads a whole blob from the content store, chunk by chunk into `sink` (a backup
    /// writes layers of any size without holding them in memory).
    pub async fn read_content(
        &self,
        digest: &str,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        let request = ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        };
        let mut chunks = ContentClient::new(self.channel.clone())
            .read(self.request(request, None))
            .await
            .map_err(call("Content.Read"))?
            .into_inner();
        while let Some(chunk) = chunks.message().await.map_err(call("Content.Read"))? {
            sink(&chunk.data).map_err(|e| ContainerdError::Call {
                call: "Content.Read",
                status: Status::internal(e.to_string()),
            })?;
        }
        Ok(())
    }

    /// Streams one blob into the content store. containerd checks `digest` and `size`
    /// at commit; a blob that exists already counts as written.
    pub async fn write_content(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        labels: HashMap<String, String>,
        chunks: mpsc::Receiver<bytes::Bytes>,
    ) -> Result<()> {
        let (requests, outgoing) = mpsc::channel::<WriteContentRequest>(4);
        let reference = format!("appunit-{digest}");
        // A write a crash interrupted leaves its ingest behind, at some offset; this one
        // starts from zero. (Callers hold the blob's lock: no live writer is aborted.)
        let abort = AbortRequest {
            r#ref: reference.clone(),
        };
        unless_missing(
            ContentClient::new(self.channel.clone())
                .abort(self.request(abort, None))
                .await,
            "Content.Abort",
        )?;
        let total = size as i64;
        let feed = async move {
            let mut chunks = chunks;
            let mut offset = 0i64;
            while let Some(data) = chunks.recv().await {
                let length = data.len() as i64;
                let write = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: digest.to_string(),
                    offset,
                    data: data.to_vec(),
                    labels: HashMap::new(),
                };
                if requests.send(write).await.is_err() {
                    return;
                }
                offset += length;
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: reference,
                total,
                expected: digest.to_string(),
                offset,
                data: Vec::new(),
                labels,
            };
            let _ = requests.send(commit).await;
        };
        let exchange = async {
            let mut responses = ContentClient::new(self.channel.clone())
                .write(self.request(ReceiverStream::new(outgoing), Some(lease)))
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok::<(), Status>(())
        };
        // A write dropped half-way (the pull was cancelled) leaves its ingest behind
        // unless it is aborted: the guard does that from a task of its own.
        let mut unfinished = UnfinishedWrite {
            containerd: Some(self.clone()),
            reference: format!("appunit-{digest}"),
        };
        let ((), outcome) = tokio::join!(feed, exchange);
        unfinished.containerd = None;
        match outcome {
            Ok(()) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(call("Content.Write")(status)),
        }
    }

    pub async fn has_snapshot(&self, key: &str) -> Result<bool> {
        let request = StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        Ok(unless_missing(
            SnapshotsClient::new(self.channel.clone())
                .stat(self.request(request, None))
                .await,
            "Snapshots.Stat",
        )?
        .is_some())
    }

    /// Unpacks one layer onto `parent` and commits it as `chain_id`. Returns the digest
    /// of what was applied (the layer's diff id), for the caller to verify.
    pub async fn apply_layer(
        &self,
        lease: &Lease,
        layer: &Descriptor,
        parent: &str,
        chain_id: &str,
    ) -> Result<String> {
        let key = format!("extract-{:016x}-{chain_id}", rand::random::<u64>());
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: parent.into(),
            labels: HashMap::new(),
        };
        let mounts: Vec<Mount> = snapshots
            .prepare(self.request(prepare, Some(lease)))
            .await
            .map_err(call("Snapshots.Prepare"))?
            .into_inner()
            .mounts;
        let apply = ApplyRequest {
            diff: Some(layer.clone()),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        };
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.request(apply, Some(lease)))
            .await
            .map_err(call("Diff.Apply"));
        let applied = match applied {
            Ok(response) => response
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default(),
            Err(err) => {
                self.remove_snapshot(&key).await;
                return Err(err);
            }
        };
        let commit = CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: chain_id.into(),
            key: key.clone(),
            labels: HashMap::new(),
        };
        match snapshots.commit(self.request(commit, Some(lease))).await {
            Ok(_) => Ok(applied),
            // Another pull committed the same layer meanwhile: theirs serves.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.remove_snapshot(&key).await;
                Ok(applied)
            }
            Err(status) => {
                self.remove_snapshot(&key).await;
                Err(call("Snapshots.Commit")(status))
            }
        }
    }

    /// A read-only view `key` of the snapshot `parent` (an image's root file system),
    /// under `lease`: the mounts that show it.
    pub async fn view_snapshot(
        &self,
        lease: &Lease,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>> {
        let request = ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
            parent: parent.into(),
            labels: HashMap::new(),
        };
        Ok(SnapshotsClient::new(self.channel.clone())
            .view(self.request(request, Some(lease)))
            .await
            .map_err(call("Snapshots.View"))?
            .into_inner()
            .mounts)
    }

    /// Best effort: an active snapshot left behind is collected with its lease anyway.
    pub async fn remove_snapshot(&self, key: &str) {
        let request = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        if let Err(status) = snapshots.remove(self.request(request, None)).await {
            tracing::debug!(key, %status, "removing an extraction snapshot");
        }
    }

    /// Records `name` → `target`, replacing what the name pointed at before.
    pub async fn put_image(&self, name: &str, target: Descriptor) -> Result<()> {
        let image = Image {
            name: name.into(),
            labels: HashMap::new(),
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let create = CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        };
        match images.create(self.request(create, None)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                };
                images
                    .update(self.request(update, None))
                    .await
                    .map_err(call("Images.Update"))?;
                Ok(())
            }
            Err(status) => Err(call("Images.Create")(status)),
        }
    }

    /// The descriptor an image name points at, if the image exists.
    pub async fn image_target(&self, name: &str) -> Result<Option<Descriptor>> {
        let request = GetImageRequest { name: name.into() };
        Ok(unless_missing(
            ImagesClient::new(self.channel.clone())
                .get(self.request(request, None))
                .await,
            "Images.Get",
        )?
        .and_then(|response| response.image)
        .and_then(|image| image.target))
    }

    /// Deletes an image record and collects what only it held.
    pub async fn delete_image(&self, name: &str) -> Result<()> {
        let request = DeleteImageRequest {
            name: name.into(),
            sync: true,
            target: None,
        };
        unless_missing(
            ImagesClient::new(self.channel.clone())
                .delete(self.request(request, None))
                .await,
            "Images.Delete",
        )?;
        Ok(())
    }

    /// Creates a container: its snapshot on top of `parent_chain` (the image's top
    /// layer), and its record with `spec` (an OCI runtime spec) and `labels`.
    pub async fn create_container(
        &self,
        id: &str,
        image: &str,
        parent_chain: &str,
        spec: &oci_spec::runtime::Spec,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
            parent: parent_chain.into(),
            labels: HashMap::new(),
        };
        // Until the container record refers to it, only a lease keeps the new snapshot
        // from garbage collection (which another app's pull may trigger any moment).
        let lease = self.create_lease("create").await?;
        let created = self
            .create_container_under(&lease, id, image, prepare, spec, labels)
            .await;
        self.release_lease(lease, false).await?;
        created
    }

    async fn create_container_under(
        &self,
        lease: &Lease,
        id: &str,
        image: &str,
        prepare: PrepareSnapshotRequest,
        spec: &oci_spec::runtime::Spec,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        match snapshots.prepare(self.request(prepare, Some(lease))).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(call("Snapshots.Prepare")(status)),
        }
        let spec = serde_json::to_vec(spec).map_err(|e| ContainerdError::Call {
            call: "Containers.Create",
            status: Status::invalid_argument(e.to_string()),
        })?;
        let options = RuncOptions {
            systemd_cgroup: true,
        };
        let container = Container {
            id: id.into(),
            labels,
            image: image.into(),
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: Some(prost_types::Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    value: prost::Message::encode_to_vec(&options),
                }),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: spec,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.into(),
            ..Container::default()
        };
        let request = CreateContainerRequest {
            container: Some(container),
        };
        ContainersClient::new(self.channel.clone())
            .create(self.request(request, Some(lease)))
            .await
            .map_err(call("Containers.Create"))?;
        Ok(())
    }

    /// Removes a container with its task and snapshot; what is already gone is fine.
    pub async fn delete_container(&self, id: &str) -> Result<()> {
        self.delete_task(id).await?;
        let request = DeleteContainerRequest { id: id.into() };
        unless_missing(
            ContainersClient::new(self.channel.clone())
                .delete(self.request(request, None))
                .await,
            "Containers.Delete",
        )?;
        let request = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
        };
        unless_missing(
            SnapshotsClient::new(self.channel.clone())
                .remove(self.request(request, None))
                .await,
            "Snapshots.Remove",
        )?;
        Ok(())
    }

    /// Creates the container's task (its process, not started yet) with stdout and
    /// stderr going to the given FIFOs. Returns the task's PID.
    pub async fn create_task(&self, id: &str, stdout: &Path, stderr: &Path) -> Result<u32> {
        let request = MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.into(),
        };
        let rootfs = SnapshotsClient::new(self.channel.clone())
            .mounts(self.request(request, None))
            .await
            .map_err(call("Snapshots.Mounts"))?
            .into_inner()
            .mounts;
        let request = CreateTaskRequest {
            container_id: id.into(),
            rootfs,
            stdout: stdout.display().to_string(),
            stderr: stderr.display().to_string(),
            ..CreateTaskRequest::default()
        };
        let created = TasksClient::new(self.channel.clone())
            .create(self.request(request, None))
            .await
            .map_err(call("Tasks.Create"))?;
        Ok(created.into_inner().pid)
    }

    pub async fn start_task(&self, id: &str) -> Result<()> {
        let request = StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        TasksClient::new(self.channel.clone())
            .start(self.request(request, None))
            .await
            .map_err(call("Tasks.Start"))?;
        Ok(())
    }

    /// Sends `signal` to the task's init process; when it dies, the kernel ends the
    /// rest of the container's PID namespace.
    pub async fn kill_task(&self, id: &str, signal: u32) -> Result<()> {
        let request = KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal,
            all: false,
        };
        unless_missing(
            TasksClient::new(self.channel.clone())
                .kill(self.request(request, None))
                .await,
            "Tasks.Kill",
        )?;
        Ok(())
    }

    /// Waits for the task to exit; its exit status.
    pub async fn wait_task(&self, id: &str) -> Result<u32> {
        let request = WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        let waited = TasksClient::new(self.channel.clone())
            .wait(self.request(request, None))
            .await
            .map_err(call("Tasks.Wait"))?;
        Ok(waited.into_inner().exit_status)
    }

    /// Deletes an exited task; a missing one is fine.
    pub async fn delete_task(&self, id: &str) -> Result<()> {
        let request = DeleteTaskRequest {
            container_id: id.into(),
        };
        unless_missing(
            TasksClient::new(self.channel.clone())
                .delete(self.request(request, None))
                .await,
            "Tasks.Delete",
        )?;
        Ok(())
    }

    /// Runs `process` inside the running container `id` and returns its exit status:
    /// how health checks run. Its output goes to /dev/null: a closed stdout would fail
    /// a check that prints (wget -O-).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<u32> {
        let spec = serde_json::to_vec(process).map_err(|e| ContainerdError::Call {
            call: "Tasks.Exec",
            status: Status::invalid_argument(e.to_string()),
        })?;
        let mut tasks = TasksClient::new(self.channel.clone());
        let request = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            stdout: "file:///dev/null".into(),
            stderr: "file:///dev/null".into(),
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE.into(),
                value: spec,
            }),
            ..ExecProcessRequest::default()
        };
        tasks
            .exec(self.request(request, None))
            .await
            .map_err(call("Tasks.Exec"))?;
        let outcome = async {
            let start = StartRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            };
            tasks
                .start(self.request(start, None))
                .await
                .map_err(call("Tasks.Start"))?;
            let wait = WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            };
            let waited = tasks
                .wait(self.request(wait, None))
                .await
                .map_err(call("Tasks.Wait"))?;
            Ok(waited.into_inner().exit_status)
        }
        .await;
        let delete = DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        // The process record must go whatever happened, or its id stays taken.
        let _ = tasks.delete_process(self.request(delete, None)).await;
        outcome
    }

    /// Whether the container's task exists and is running (after a supervisor restart,
    /// its containers may well be).
    pub async fn task_running(&self, id: &str) -> Result<bool> {
        Ok(self.task(id).await?.is_some_and(|task| task.running))
    }

    /// The container's task, if it has one (running, or exited and not yet deleted).
    pub async fn task(&self, id: &str) -> Result<Option<TaskState>> {
        let request = GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        let task = unless_missing(
            TasksClient::new(self.channel.clone())
                .get(self.request(request, None))
                .await,
            "Tasks.Get",
        )?;
        Ok(task
            .and_then(|response| response.process)
            .map(|p| TaskState {
                pid: p.pid,
                running: p.status == containerd_client::types::v1::Status::Running as i32,
            }))
    }

    /// appunit's containers: those of one app, or of every app.
    pub async fn app_containers(&self, app_id: Option<&str>) -> Result<Vec<AppContainer>> {
        let filter = match app_id {
            Some(app_id) => format!("labels.\"{APP_LABEL}\"=={app_id}"),
            None => format!("labels.\"{APP_LABEL}\""),
        };
        let request = ListContainersRequest {
            filters: vec![filter],
        };
        let containers = ContainersClient::new(self.channel.clone())
            .list(self.request(request, None))
            .await
            .map_err(call("Containers.List"))?
            .into_inner()
            .containers;
        Ok(containers
            .into_iter()
            .map(|c| AppContainer {
                app_id: c.labels.get(APP_LABEL).cloned().unwrap_or_default(),
                id: c.id,
                image: c.image,
            })
            .collect())
    }

    /// Labels of every container that runs `image`.
    pub async fn containers_using(&self, image: &str) -> Result<Vec<HashMap<String, String>>> {
        let request = ListContainersRequest {
            filters: vec![format!("image=={image}")],
        };
        let containers = ContainersClient::new(self.channel.clone())
            .list(self.request(request, None))
            .await
            .map_err(call("Containers.List"))?
            .into_inner()
            .containers;
        Ok(containers.into_iter().map(|c| c.labels).collect())
    }
}
