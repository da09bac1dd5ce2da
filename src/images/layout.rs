//! Images without a registry: an app's images written out of containerd as an OCI image
//! layout (a backup's `images/`, which `ctr images import` and skopeo read), read back
//! into containerd, and resolved from containerd's own content store when an image is
//! already there (a restore on an offline host).

use super::{
    DescriptorJson, Document, INDEX_TYPES, MANIFEST_TYPES, ManifestJson, PullError, PullLease,
    Puller, Resolved, canonical, checked_digest, host_architecture,
};
use bytes::Bytes;
use containerd_client::types::Descriptor;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// The annotation by which `ctr images import` names an image.
const IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation of a layout entry's tag.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Blobs are streamed into containerd in pieces this large.
const CHUNK: usize = 1 << 20;

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    layout.join("blobs").join("sha256").join(hex)
}

impl Puller {
    /// A small document (manifest, index, config) from the content store.
    async fn read_document(&self, name: &str, digest: &str) -> Result<Bytes, PullError> {
        let mut bytes = Vec::new();
        self.containerd
            .read_content(digest, |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            })
            .await
            .map_err(|source| PullError::Containerd {
                image: name.to_string(),
                source,
            })?;
        checked_digest(&bytes, Some(digest)).map_err(PullError::unsupported(name))?;
        Ok(bytes.into())
    }

    /// The image as containerd holds it, for this host's platform; None unless the
    /// image and every layer of it are there.
    pub(super) async fn resolve_local(&self, image: &str) -> Result<Option<Resolved>, PullError> {
        let reference = canonical(image)?;
        let name = reference.whole();
        let containerd_error = |source| PullError::Containerd {
            image: name.clone(),
            source,
        };
        let unsupported = PullError::unsupported(&name);
        let Some(top) = self
            .containerd
            .image_target(&name)
            .await
            .map_err(containerd_error)?
        else {
            return Ok(None);
        };
        let top_bytes = self.read_document(&name, &top.digest).await?;
        let top_json: ManifestJson = serde_json::from_slice(&top_bytes)
            .map_err(|e| unsupported(format!("unreadable manifest: {e}")))?;
        let top_document = Document {
            descriptor: top.clone(),
            bytes: top_bytes,
        };
        let (index, manifest, manifest_json) = if INDEX_TYPES.contains(&top.media_type.as_str()) {
            let architecture = host_architecture();
            let Some(entry) = top_json.manifests.iter().find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == architecture)
            }) else {
                return Ok(None);
            };
            let bytes = self.read_document(&name, &entry.digest).await?;
            let json: ManifestJson = serde_json::from_slice(&bytes)
                .map_err(|e| unsupported(format!("unreadable manifest: {e}")))?;
            let document = Document {
                descriptor: entry.descriptor(),
                bytes,
            };
            (Some(top_document), document, json)
        } else {
            (None, top_document, top_json)
        };
        for layer in &manifest_json.layers {
            if !self
                .containerd
                .has_content(&layer.digest)
                .await
                .map_err(containerd_error)?
            {
                return Ok(None);
            }
        }
        let endpoint = self
            .registry
            .endpoint(reference.registry(), reference.repository());
        let config = config_descriptor(&name, &manifest_json)?;
        let config_bytes = self.read_document(&name, &config.digest).await?;
        resolved_from(name, endpoint, index, manifest, manifest_json, config_bytes).map(Some)
    }
}

/// The manifest's config descriptor.
fn config_descriptor(name: &str, manifest: &ManifestJson) -> Result<DescriptorJson, PullError> {
    manifest
        .config
        .clone()
        .ok_or_else(|| PullError::unsupported(name)("the manifest has no config".into()))
}

/// A resolved image from its manifest and config, wherever they were read.
pub(super) fn resolved_from(
    name: String,
    source: super::registry::Endpoint,
    index: Option<Document>,
    manifest: Document,
    manifest_json: ManifestJson,
    config_bytes: Bytes,
) -> Result<Resolved, PullError> {
    let unsupported = PullError::unsupported(&name);
    let config = config_descriptor(&name, &manifest_json)?;
    let config_json: super::ConfigJson = serde_json::from_slice(&config_bytes)
        .map_err(|e| unsupported(format!("unreadable image config: {e}")))?;
    if config_json.rootfs.diff_ids.len() != manifest_json.layers.len() {
        return Err(unsupported(
            "the config's diff_ids do not match the layers".into(),
        ));
    }
    Ok(Resolved {
        name,
        source,
        index,
        manifest,
        config: Document {
            descriptor: config.descriptor(),
            bytes: config_bytes,
        },
        layers: manifest_json
            .layers
            .iter()
            .map(DescriptorJson::descriptor)
            .collect(),
        diff_ids: config_json.rootfs.diff_ids,
        run: config_json.config,
    })
}

impl Puller {
    /// Writes the images, as containerd holds them, into `layout` as an OCI image
    /// layout: one entry per image (this host's platform manifest), named as
    /// `ctr images import` names images. Blobs shared by images are written once.
    pub async fn export_layout(&self, images: &[String], layout: &Path) -> Result<(), PullError> {
        let io = |name: &str| {
            let name = name.to_string();
            move |e: std::io::Error| PullError::Unsupported {
                image: name.clone(),
                cause: format!("writing the image layout: {e}"),
            }
        };
        std::fs::create_dir_all(layout.join("blobs").join("sha256")).map_err(io("layout"))?;
        let mut entries = Vec::new();
        for image in images {
            let resolved =
                self.resolve_local(image)
                    .await?
                    .ok_or_else(|| PullError::Unsupported {
                        image: image.clone(),
                        cause: "not (wholly) in containerd: it cannot be backed up".into(),
                    })?;
            let name = resolved.name.as_str();
            for document in [&resolved.config, &resolved.manifest] {
                std::fs::write(
                    blob_path(layout, &document.descriptor.digest),
                    &document.bytes,
                )
                .map_err(io(name))?;
            }
            for layer in &resolved.layers {
                let path = blob_path(layout, &layer.digest);
                if path.exists() {
                    continue;
                }
                let partial = path.with_extension("partial");
                let mut file = std::io::BufWriter::with_capacity(
                    CHUNK,
                    std::fs::File::create(&partial).map_err(io(name))?,
                );
                self.containerd
                    .read_content(&layer.digest, |chunk| file.write_all(chunk))
                    .await
                    .map_err(|source| PullError::Containerd {
                        image: name.to_string(),
                        source,
                    })?;
                file.flush().map_err(io(name))?;
                std::fs::rename(&partial, &path).map_err(io(name))?;
            }
            let manifest = &resolved.manifest.descriptor;
            let tag = canonical(name)?.tag().unwrap_or("latest").to_string();
            entries.push(json!({
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": manifest.size,
                "annotations": {IMAGE_NAME: name, REF_NAME: tag},
            }));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPES[0],
            "manifests": entries,
        });
        std::fs::write(layout.join("index.json"), index.to_string()).map_err(io("layout"))?;
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .map_err(io("layout"))?;
        Ok(())
    }

    /// Reads an OCI image layout into containerd: blobs into the content store, layers
    /// unpacked, every image named as its entry says. No registry is asked anything.
    /// The names imported.
    pub async fn import_layout(&self, layout: &Path) -> Result<Vec<String>, PullError> {
        let unreadable = |cause: String| PullError::Unsupported {
            image: layout.display().to_string(),
            cause,
        };
        let index: ManifestJson = serde_json::from_slice(
            &std::fs::read(layout.join("index.json")).map_err(|e| unreadable(e.to_string()))?,
        )
        .map_err(|e| unreadable(format!("index.json: {e}")))?;
        let progress = std::sync::Arc::new(super::progress::Progress::default());
        let mut names = Vec::new();
        for entry in &index.manifests {
            let name = entry
                .annotations
                .get(IMAGE_NAME)
                .ok_or_else(|| unreadable(format!("{} has no {IMAGE_NAME}", entry.digest)))?;
            let name = canonical(name)?.whole();
            if !MANIFEST_TYPES.contains(&entry.media_type.as_str()) {
                return Err(unreadable(format!("{name}: not an image manifest")));
            }
            let read_blob = |digest: &str| {
                let path = blob_path(layout, digest);
                let (digest, name) = (digest.to_string(), name.clone());
                async move {
                    let bytes = tokio::fs::read(&path)
                        .await
                        .map_err(|e| PullError::unsupported(&name)(e.to_string()))?;
                    checked_digest(&bytes, Some(&digest)).map_err(PullError::unsupported(&name))?;
                    Ok::<Bytes, PullError>(bytes.into())
                }
            };
            let manifest_bytes = read_blob(&entry.digest).await?;
            let manifest_json: ManifestJson = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| unreadable(format!("{name}: unreadable manifest: {e}")))?;
            let manifest = Document {
                descriptor: entry.descriptor(),
                bytes: manifest_bytes,
            };
            let reference = canonical(&name)?;
            let endpoint = self
                .registry
                .endpoint(reference.registry(), reference.repository());
            let config = config_descriptor(&name, &manifest_json)?;
            let config_bytes = read_blob(&config.digest).await?;
            let resolved = resolved_from(
                name.clone(),
                endpoint,
                None,
                manifest,
                manifest_json,
                config_bytes,
            )?;
            // The layers go in under a lease of their own, held until the image that
            // refers to them is recorded.
            let containerd_error = |source| PullError::Containerd {
                image: name.clone(),
                source,
            };
            let lease = PullLease::create(&self.containerd)
                .await
                .map_err(containerd_error)?;
            for (layer, diff_id) in resolved.layers.iter().zip(&resolved.diff_ids) {
                self.write_blob_file(&lease, layer, diff_id, &blob_path(layout, &layer.digest))
                    .await
                    .map_err(|e| match e {
                        BlobError::Io(e) => unreadable(format!("{}: {e}", layer.digest)),
                        BlobError::Containerd(source) => PullError::Containerd {
                            image: name.clone(),
                            source,
                        },
                    })?;
            }
            let outcome = self.fetch_and_unpack(resolved, &progress).await;
            lease.release(false).await.map_err(containerd_error)?;
            outcome?;
            names.push(name);
        }
        Ok(names)
    }

    async fn write_blob_file(
        &self,
        lease: &PullLease,
        layer: &Descriptor,
        diff_id: &str,
        path: &Path,
    ) -> Result<(), BlobError> {
        if self
            .containerd
            .has_content(&layer.digest)
            .await
            .map_err(BlobError::Containerd)?
        {
            return Ok(());
        }
        let mut file = tokio::fs::File::open(path).await.map_err(BlobError::Io)?;
        let (chunks, receiver) = mpsc::channel::<Bytes>(2);
        let labels = HashMap::from([(
            "containerd.io/uncompressed".to_string(),
            diff_id.to_string(),
        )]);
        let write = self.containerd.write_content(
            &lease.lease,
            &layer.digest,
            layer.size as u64,
            labels,
            receiver,
        );
        let read = async move {
            loop {
                let mut buffer = vec![0u8; CHUNK];
                let n = file.read(&mut buffer).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                buffer.truncate(n);
                if chunks.send(buffer.into()).await.is_err() {
                    return Ok(());
                }
            }
        };
        let (read, write) = tokio::join!(read, write);
        read.map_err(BlobError::Io)?;
        write.map_err(BlobError::Containerd)
    }
}

enum BlobError {
    Io(std::io::Error),
    Containerd(super::ContainerdError),
}
