//! Images without Docker: resolve through mirrors, stream blobs into containerd's
//! content store with exact byte progress, unpack layers into snapshots, record the image.
//! This is the client-side pull that containerd 1.6 (no Transfer service) needs.

pub mod auth;
mod layout;
pub mod progress;
pub mod registry;
pub mod retry;

use crate::config::RegistryConfig;
use crate::runtime::containerd::{APP_LABEL, Containerd, ContainerdError, Lease, SNAPSHOTTER};
use crate::runtime::oci::{ImageConfig, null_as_default};
use bytes::Bytes;
use containerd_client::types::Descriptor;
use futures_util::TryStreamExt;
use futures_util::stream::FuturesUnordered;
use oci_client::Reference;
use progress::Progress;
use registry::{DOCUMENT_LIMIT, Endpoint, RegistryClient};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Blobs of one image fetched at once.
const CONCURRENT_BLOBS: usize = 3;
/// The largest layer a descriptor may declare: far above any real one, far below
/// sizes that would overflow a count.
const LAYER_LIMIT: u64 = 64 << 30;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{image}: not a valid image reference: {cause}")]
    Reference { image: String, cause: String },
    #[error("{image}: {cause}")]
    Registry { image: String, cause: String },
    #[error("{image}: {cause}")]
    Unsupported { image: String, cause: String },
    #[error("{image}: {source}")]
    Containerd {
        image: String,
        source: ContainerdError,
    },
}

impl PullError {
    fn registry(image: &str) -> impl Fn(String) -> PullError + Copy + '_ {
        move |cause| PullError::Registry {
            image: image.to_string(),
            cause,
        }
    }

    fn unsupported(image: &str) -> impl Fn(String) -> PullError + Copy + '_ {
        move |cause| PullError::Unsupported {
            image: image.to_string(),
            cause,
        }
    }
}

/// A pulled image: its name, the digest it resolved to (which the app is pinned to),
/// how to run it, and the snapshot its containers start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    pub name: String,
    pub digest: String,
    pub config: ImageConfig,
    /// The chain id of the top layer: the parent of a container's snapshot.
    pub chain_id: String,
}

#[derive(Clone)]
pub struct Puller {
    registry: Arc<RegistryClient>,
    containerd: Containerd,
    registries: Arc<BTreeMap<String, RegistryConfig>>,
    /// One writer per blob at a time: containerd refuses a second writer of a ref.
    blob_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A registry document kept as the exact bytes served, so its digest stays valid.
struct Document {
    descriptor: Descriptor,
    bytes: Bytes,
}

/// An image resolved to one platform, before its layers are fetched.
struct Resolved {
    name: String,
    source: Endpoint,
    index: Option<Document>,
    manifest: Document,
    config: Document,
    layers: Vec<Descriptor>,
    diff_ids: Vec<String>,
    run: ImageConfig,
}

/// A pull's lease, released when the pull ends. Dropped unreleased (the pull was
/// aborted half-way), it is released from a task of its own, since Drop cannot wait:
/// garbage collection then takes what the pull made, unfinished writes included.
struct PullLease {
    containerd: Containerd,
    lease: Lease,
    released: bool,
}

impl PullLease {
    async fn create(containerd: &Containerd) -> Result<PullLease, ContainerdError> {
        Ok(PullLease {
            lease: containerd.create_lease("pull").await?,
            containerd: containerd.clone(),
            released: false,
        })
    }

    /// With `collect` (the pull failed), what only the lease held is gone on return.
    async fn release(mut self, collect: bool) -> Result<(), ContainerdError> {
        let lease = Lease {
            id: self.lease.id.clone(),
        };
        self.containerd.release_lease(lease, collect).await?;
        self.released = true;
        Ok(())
    }
}

impl Drop for PullLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (containerd, id) = (self.containerd.clone(), self.lease.id.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let lease = Lease { id: id.clone() };
                    if let Err(err) = containerd.release_lease(lease, true).await {
                        tracing::warn!(lease = id, %err, "releasing an aborted pull's lease");
                    }
                });
            }
            // The daemon's next start releases it, or it expires.
            Err(_) => tracing::warn!(lease = id, "an aborted pull's lease outlives it"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<DescriptorJson>,
    config: Option<DescriptorJson>,
    #[serde(default)]
    layers: Vec<DescriptorJson>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<PlatformJson>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize, Clone)]
struct PlatformJson {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct ConfigJson {
    rootfs: RootFs,
    #[serde(default, deserialize_with = "null_as_default")]
    config: ImageConfig,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

impl DescriptorJson {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

impl Puller {
    pub fn new(containerd: Containerd, registries: BTreeMap<String, RegistryConfig>) -> Puller {
        let registries = Arc::new(registries);
        Puller {
            registry: Arc::new(RegistryClient::new(registries.clone())),
            containerd,
            registries,
            blob_locks: Arc::default(),
        }
    }

    /// Pulls every image; `progress` covers them all. Every image is resolved before any
    /// layer is fetched, so the total is known from the first byte on. In the order of
    /// `images`.
    pub async fn pull_all(
        &self,
        images: &[String],
        progress: &Arc<Progress>,
    ) -> Result<Vec<PulledImage>, PullError> {
        self.pull_all_from(images, progress, false).await
    }

    /// `pull_all`; with `local_first`, an image containerd holds wholly is taken from
    /// there and no registry is asked for it (a restore of a bundle with images).
    pub async fn pull_all_from(
        &self,
        images: &[String],
        progress: &Arc<Progress>,
        local_first: bool,
    ) -> Result<Vec<PulledImage>, PullError> {
        let mut resolved = Vec::with_capacity(images.len());
        for image in images {
            let local = match local_first {
                true => self.resolve_local(image).await?,
                false => None,
            };
            let image = match local {
                Some(local) => local,
                None => self.resolve(image, progress).await?,
            };
            progress.add_total(image.layers.iter().map(|l| l.size as u64).sum());
            resolved.push(image);
        }
        // At once, as `docker compose pull` does: one image's layers download while
        // another's unpack.
        futures_util::future::try_join_all(
            resolved
                .into_iter()
                .map(|image| self.fetch_and_unpack(image, progress)),
        )
        .await
    }

    /// Removes an image unless a container of another app uses it. True when removed.
    pub async fn remove_unless_used(&self, image: &str, app_id: &str) -> Result<bool, PullError> {
        let name = canonical(image)?.whole();
        let in_use = |source| PullError::Containerd {
            image: name.clone(),
            source,
        };
        let users = self
            .containerd
            .containers_using(&name)
            .await
            .map_err(in_use)?;
        if users
            .iter()
            .any(|labels| labels.get(APP_LABEL).map(String::as_str) != Some(app_id))
        {
            return Ok(false);
        }
        self.containerd.delete_image(&name).await.map_err(in_use)?;
        Ok(true)
    }

    /// Finds the image's manifest for this host through the mirrors, then the registry.
    async fn resolve(&self, image: &str, progress: &Progress) -> Result<Resolved, PullError> {
        let reference = canonical(image)?;
        let name = reference.whole();
        let mut failures = Vec::new();
        let sources = self.sources(&reference);
        let last = sources.len() - 1;
        for (index, (host, wanted)) in sources.into_iter().enumerate() {
            let mut endpoint = self.registry.endpoint(&host, reference.repository());
            endpoint.fallback = index < last;
            match self.resolve_at(&name, endpoint, &wanted, progress).await {
                Ok(resolved) => return Ok(resolved),
                Err(PullError::Registry { cause, .. }) => {
                    failures.push(format!("{host}: {cause}"));
                }
                Err(other) => return Err(other),
            }
        }
        Err(PullError::Registry {
            image: name,
            cause: failures.join("; "),
        })
    }

    /// The hosts to ask for the image: the mirrors configured for its registry, in
    /// order, then the registry; each with the tag or digest to ask for.
    fn sources(&self, reference: &Reference) -> Vec<(String, String)> {
        let wanted = match reference.digest() {
            Some(digest) => digest.to_string(),
            None => reference.tag().unwrap_or("latest").to_string(),
        };
        let mirrors = self
            .registries
            .get(reference.registry())
            .map(|settings| settings.mirrors.as_slice())
            .unwrap_or_default();
        mirrors
            .iter()
            .map(|mirror| {
                let host = mirror.split_once("://").map_or(mirror.as_str(), |(_, h)| h);
                host.trim_end_matches('/').to_string()
            })
            .chain(std::iter::once(reference.registry().to_string()))
            .map(|host| (host, wanted.clone()))
            .collect()
    }

    async fn resolve_at(
        &self,
        name: &str,
        source: Endpoint,
        wanted: &str,
        progress: &Progress,
    ) -> Result<Resolved, PullError> {
        let (registry, unsupported) = (PullError::registry(name), PullError::unsupported(name));
        let accepted: Vec<&str> = INDEX_TYPES.iter().chain(&MANIFEST_TYPES).copied().collect();
        let fetched = self
            .registry
            .manifest(&source, wanted, &accepted, progress)
            .await
            .map_err(|e| registry(e.to_string()))?;
        let bytes = fetched.bytes;
        let top: ManifestJson = serde_json::from_slice(&bytes)
            .map_err(|e| unsupported(format!("unreadable manifest: {e}")))?;
        let top_type = top.media_type.clone().unwrap_or_else(|| {
            let kind = if top.manifests.is_empty() {
                MANIFEST_TYPES[0]
            } else {
                INDEX_TYPES[0]
            };
            kind.to_string()
        });
        // Asked by digest, that digest is what the bytes must have.
        let expected = if wanted.starts_with("sha256:") {
            Some(wanted)
        } else {
            fetched.digest.as_deref()
        };
        let top_document = Document {
            descriptor: Descriptor {
                media_type: top_type.clone(),
                digest: checked_digest(&bytes, expected).map_err(registry)?,
                size: bytes.len() as i64,
                annotations: HashMap::new(),
            },
            bytes,
        };
        let (index, manifest, manifest_json) = if INDEX_TYPES.contains(&top_type.as_str()) {
            let (manifest, json) = self
                .platform_manifest(name, &source, &top, progress)
                .await?;
            (Some(top_document), manifest, json)
        } else {
            (None, top_document, top)
        };
        let config = manifest_json
            .config
            .clone()
            .ok_or_else(|| unsupported("the manifest has no config".into()))?;
        check_descriptor(&config, DOCUMENT_LIMIT, "the image config").map_err(unsupported)?;
        for layer in &manifest_json.layers {
            check_descriptor(layer, LAYER_LIMIT, "a layer").map_err(unsupported)?;
        }
        let config_bytes = self
            .registry
            .small_blob(&source, &config.digest, progress)
            .await
            .map_err(|e| registry(e.to_string()))?;
        checked_digest(&config_bytes, Some(&config.digest)).map_err(registry)?;
        layout::resolved_from(
            name.to_string(),
            source,
            index,
            manifest,
            manifest_json,
            config_bytes,
        )
    }

    /// The manifest an index lists for this host's platform.
    async fn platform_manifest(
        &self,
        name: &str,
        source: &Endpoint,
        index: &ManifestJson,
        progress: &Progress,
    ) -> Result<(Document, ManifestJson), PullError> {
        let (registry, unsupported) = (PullError::registry(name), PullError::unsupported(name));
        let (os, architecture) = ("linux", host_architecture());
        let entry = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == architecture)
            })
            .ok_or_else(|| unsupported(format!("no image for {os}/{architecture}")))?;
        check_descriptor(entry, DOCUMENT_LIMIT, "the platform's manifest").map_err(unsupported)?;
        let fetched = self
            .registry
            .manifest(source, &entry.digest, &MANIFEST_TYPES, progress)
            .await
            .map_err(|e| registry(e.to_string()))?;
        let bytes = fetched.bytes;
        checked_digest(&bytes, Some(&entry.digest)).map_err(registry)?;
        let json: ManifestJson = serde_json::from_slice(&bytes)
            .map_err(|e| unsupported(format!("unreadable manifest: {e}")))?;
        let document = Document {
            descriptor: entry.descriptor(),
            bytes,
        };
        Ok((document, json))
    }

    /// Under one lease: fetch and unpack the layers, then store config, manifest and
    /// index with the labels that keep them alive, and record the image. On failure,
    /// and when the pull is dropped half-way, the lease goes and garbage collection
    /// takes whatever the pull had created.
    async fn fetch_and_unpack(
        &self,
        image: Resolved,
        progress: &Arc<Progress>,
    ) -> Result<PulledImage, PullError> {
        let failed = |source| PullError::Containerd {
            image: image.name.clone(),
            source,
        };
        let lease = PullLease::create(&self.containerd).await.map_err(failed)?;
        let outcome = async {
            let chain_id = self.unpack_layers(&lease.lease, &image, progress).await?;
            let digest = self.record_image(&lease.lease, &image, &chain_id).await?;
            Ok(PulledImage {
                name: image.name.clone(),
                digest,
                config: image.run.clone(),
                chain_id,
            })
        }
        .await;
        let released = lease.release(outcome.is_err()).await;
        let pulled = outcome?;
        released.map_err(failed)?;
        Ok(pulled)
    }

    /// Fetches the layers, a few at once, and unpacks each as soon as it and the ones
    /// below it are in. Both run inside this future: dropping it ends every download.
    /// The chain id of the top layer.
    async fn unpack_layers(
        &self,
        lease: &Lease,
        image: &Resolved,
        progress: &Progress,
    ) -> Result<String, PullError> {
        // How many layers from the bottom are in the content store.
        let (fetched, mut in_store) = watch::channel(0usize);
        let fetch = async move {
            let mut layers = image.layers.iter().zip(&image.diff_ids).enumerate();
            let mut running = FuturesUnordered::new();
            let mut done = vec![false; image.layers.len()];
            loop {
                while running.len() < CONCURRENT_BLOBS
                    && let Some((i, (layer, diff_id))) = layers.next()
                {
                    running.push(async move {
                        self.fetch_layer(lease, image, layer, diff_id, progress)
                            .await
                            .map(|()| i)
                    });
                }
                let Some(i) = running.try_next().await? else {
                    return Ok(());
                };
                done[i] = true;
                fetched.send_replace(done.iter().take_while(|d| **d).count());
            }
        };
        let unpack = async {
            let mut parent = String::new();
            for (i, (layer, diff_id)) in image.layers.iter().zip(&image.diff_ids).enumerate() {
                // Closed only when fetching failed, and then its error ends the join.
                if in_store.wait_for(|n| *n > i).await.is_err() {
                    break;
                }
                let chain_id = chain_id(&parent, diff_id);
                self.unpack_layer(lease, image, layer, diff_id, &parent, &chain_id)
                    .await?;
                parent = chain_id;
            }
            Ok(parent)
        };
        let ((), top) = tokio::try_join!(fetch, unpack)?;
        Ok(top)
    }

    /// Unpacks one layer onto `parent` as `chain_id`, unless that snapshot exists.
    async fn unpack_layer(
        &self,
        lease: &Lease,
        image: &Resolved,
        layer: &Descriptor,
        diff_id: &str,
        parent: &str,
        chain_id: &str,
    ) -> Result<(), PullError> {
        let containerd_error = |source| PullError::Containerd {
            image: image.name.clone(),
            source,
        };
        if self
            .containerd
            .has_snapshot(chain_id)
            .await
            .map_err(containerd_error)?
        {
            return Ok(());
        }
        let applied = self
            .containerd
            .apply_layer(lease, layer, parent, chain_id)
            .await
            .map_err(containerd_error)?;
        if applied != diff_id {
            return Err(PullError::Registry {
                image: image.name.clone(),
                cause: format!(
                    "layer {} unpacks to {applied}, but the config says {diff_id}",
                    layer.digest
                ),
            });
        }
        Ok(())
    }

    /// Stores config, manifest and index, each labelled to keep what it refers to,
    /// and points the image's name at the top one. The digest the name points at.
    async fn record_image(
        &self,
        lease: &Lease,
        image: &Resolved,
        top_chain: &str,
    ) -> Result<String, PullError> {
        let config_labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top_chain.to_string(),
        )]);
        self.store_document(lease, &image.config, config_labels, &image.name)
            .await?;
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            image.config.descriptor.digest.clone(),
        )]);
        for (i, layer) in image.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.store_document(lease, &image.manifest, manifest_labels, &image.name)
            .await?;
        let target = match &image.index {
            Some(index) => {
                let labels = HashMap::from([(
                    "containerd.io/gc.ref.content.m.0".to_string(),
                    image.manifest.descriptor.digest.clone(),
                )]);
                self.store_document(lease, index, labels, &image.name)
                    .await?;
                index.descriptor.clone()
            }
            None => image.manifest.descriptor.clone(),
        };
        let digest = target.digest.clone();
        self.containerd
            .put_image(&image.name, target)
            .await
            .map_err(|source| PullError::Containerd {
                image: image.name.clone(),
                source,
            })?;
        Ok(digest)
    }

    async fn store_document(
        &self,
        lease: &Lease,
        document: &Document,
        labels: HashMap<String, String>,
        image: &str,
    ) -> Result<(), PullError> {
        let lock = self.blob_lock(&document.descriptor.digest);
        let _held = lock.lock().await;
        let exists = self
            .containerd
            .has_content(&document.descriptor.digest)
            .await;
        if exists.map_err(|source| PullError::Containerd {
            image: image.to_string(),
            source,
        })? {
            return Ok(());
        }
        let (chunks, receiver) = mpsc::channel(1);
        // The channel holds the one chunk, so this send cannot wait.
        let _ = chunks.try_send(document.bytes.clone());
        drop(chunks);
        let descriptor = &document.descriptor;
        self.containerd
            .write_content(
                lease,
                &descriptor.digest,
                descriptor.size as u64,
                labels,
                receiver,
            )
            .await
            .map_err(|source| PullError::Containerd {
                image: image.to_string(),
                source,
            })
    }

    /// Streams one layer blob from the registry into the content store, unless it is
    /// there already; every byte counts towards `progress`.
    async fn fetch_layer(
        &self,
        lease: &Lease,
        image: &Resolved,
        layer: &Descriptor,
        diff_id: &str,
        progress: &Progress,
    ) -> Result<(), PullError> {
        let registry = |cause: String| PullError::Registry {
            image: image.name.clone(),
            cause: format!("layer {}: {cause}", layer.digest),
        };
        let containerd_error = |source| PullError::Containerd {
            image: image.name.clone(),
            source,
        };
        let lock = self.blob_lock(&layer.digest);
        let _held = lock.lock().await;
        if self
            .containerd
            .has_content(&layer.digest)
            .await
            .map_err(containerd_error)?
        {
            progress.add_present(layer.size as u64);
            return Ok(());
        }
        let labels = HashMap::from([(
            "containerd.io/uncompressed".to_string(),
            diff_id.to_string(),
        )]);
        let (chunks, receiver) = mpsc::channel::<Bytes>(2);
        let size = layer.size as u64;
        let write = self
            .containerd
            .write_content(lease, &layer.digest, size, labels, receiver);
        let read = self
            .registry
            .stream_blob(&image.source, &layer.digest, size, progress, chunks);
        // A failed read drops the writer before it commits: nothing half-written lands.
        tokio::try_join!(
            async { read.await.map_err(|e| registry(e.to_string())) },
            async { write.await.map_err(containerd_error) }
        )?;
        Ok(())
    }

    fn blob_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.blob_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map does not grow with every blob ever pulled.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(digest.to_string()).or_default().clone()
    }
}

/// The full reference: `nginx` is `docker.io/library/nginx:latest`.
fn canonical(image: &str) -> Result<Reference, PullError> {
    image
        .parse::<Reference>()
        .map_err(|e| PullError::Reference {
            image: image.to_string(),
            cause: e.to_string(),
        })
}

/// chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n]).
fn chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        diff_id.to_string()
    } else {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{parent} {diff_id}")))
        )
    }
}

/// The sha256 digest of `bytes`, checked against `expected` when there is one.
fn checked_digest(bytes: &[u8], expected: Option<&str>) -> Result<String, String> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    match expected {
        Some(expected) if !expected.is_empty() && expected != actual => Err(format!(
            "digest mismatch: expected {expected}, the registry sent {actual}"
        )),
        _ => Ok(actual),
    }
}

/// A descriptor the puller can trust its size and digest to: a sha256 digest and a
/// size within `limit`, checked before anything is fetched or allocated for it.
fn check_descriptor(descriptor: &DescriptorJson, limit: u64, what: &str) -> Result<(), String> {
    let hex = descriptor
        .digest
        .strip_prefix("sha256:")
        .unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{what} has digest {:?}; only sha256 digests are supported",
            descriptor.digest
        ));
    }
    if !u64::try_from(descriptor.size).is_ok_and(|size| size <= limit) {
        return Err(format!(
            "{what} {} declares {} bytes, over the limit of {limit} bytes",
            descriptor.digest, descriptor.size
        ));
    }
    Ok(())
}

/// The host's architecture in OCI terms.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = "sha256:aaaa";
        assert_eq!(chain_id("", a), a);
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest("sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(chain_id(a, "sha256:bbbb"), expected);
    }

    #[test]
    fn short_names_are_docker_hub_library_images() {
        assert_eq!(
            canonical("nginx").unwrap().whole(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            canonical("nginx:1.30").unwrap().whole(),
            "docker.io/library/nginx:1.30"
        );
        assert_eq!(
            canonical("127.0.0.1:5000/x/y:2").unwrap().whole(),
            "127.0.0.1:5000/x/y:2"
        );
        assert!(canonical("Not A Ref").is_err());
    }

    #[test]
    fn image_config_nulls_are_empty() {
        let config: ConfigJson = serde_json::from_str(
            r#"{"rootfs": {"diff_ids": []}, "config": {"Entrypoint": null, "Cmd": ["sh"], "Env": ["A=1"]}}"#,
        )
        .unwrap();
        assert_eq!(config.config.cmd, ["sh"]);
        assert!(config.config.entrypoint.is_empty() && config.config.user.is_empty());
        let bare: ConfigJson = serde_json::from_str(r#"{"rootfs": {"diff_ids": []}}"#).unwrap();
        assert_eq!(bare.config, ImageConfig::default());
    }

    #[test]
    fn digests_are_checked() {
        let digest = checked_digest(b"abc", None).unwrap();
        assert!(checked_digest(b"abc", Some(&digest)).is_ok());
        assert!(
            checked_digest(b"abd", Some(&digest))
                .unwrap_err()
                .contains("mismatch")
        );
    }
}
