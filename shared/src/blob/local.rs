//! A BlobStore in a local directory (the embedded shape: `DATA_DIR/media`).
//!
//! Layout under the root: objects at `<key>` (plain files, easy to inspect), their content
//! types in `.meta/<key>`, and writes in progress in `.tmp/`. Valid keys never start a
//! segment with `.`, so neither side directory can be named by a key, and no key can leave
//! the root (see [`validate_key`]).

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    BlobError, BlobInfo, BlobReader, BlobStore, content_type_for, resolve_range, validate_key,
};

const META_DIR: &str = ".meta";
const TMP_DIR: &str = ".tmp";
/// Read size when streaming a file.
const CHUNK: usize = 64 * 1024;

/// Objects as files under one directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

fn io_error(e: std::io::Error) -> BlobError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BlobError::NotFound
    } else {
        BlobError::Unavailable(format!("local storage: {e}"))
    }
}

impl LocalBlobStore {
    /// Uses (and creates when missing) `root`.
    pub async fn open(root: &Path) -> Result<Self, BlobError> {
        for dir in [root.to_path_buf(), root.join(META_DIR), root.join(TMP_DIR)] {
            tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn data_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(key)
    }

    async fn info(&self, key: &str, path: &Path) -> Result<BlobInfo, BlobError> {
        let meta = tokio::fs::metadata(path).await.map_err(io_error)?;
        if !meta.is_file() {
            return Err(BlobError::NotFound);
        }
        let content_type = match tokio::fs::read_to_string(self.meta_path(key)).await {
            Ok(t) if !t.is_empty() => t,
            _ => content_type_for(key).to_owned(),
        };
        Ok(BlobInfo {
            key: key.to_owned(),
            size: meta.len(),
            content_type,
            modified_ms: modified_ms(&meta),
        })
    }
}

fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes a file through a temporary name, so readers never see half of it.
async fn write_atomically(tmp_dir: &Path, path: &Path, body: &[u8]) -> Result<(), BlobError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_error)?;
    }
    let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(body).await?;
        file.flush().await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io_error(e));
    }
    Ok(())
}

/// Streams a reader in chunks of at most [`CHUNK`] bytes.
fn read_chunks<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures::Stream<Item = Result<Bytes, BlobError>> + Send + 'static {
    futures::stream::try_unfold(reader, |mut reader| async move {
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        let n = reader.read_buf(&mut buf).await.map_err(io_error)?;
        Ok((n > 0).then(|| (buf.freeze(), reader)))
    })
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, content_type: &str, body: Bytes) -> Result<BlobInfo, BlobError> {
        let path = self.data_path(key)?;
        let tmp = self.root.join(TMP_DIR);
        // Type first: once the object is visible its type is too.
        write_atomically(&tmp, &self.meta_path(key), content_type.as_bytes()).await?;
        write_atomically(&tmp, &path, &body).await?;
        self.info(key, &path).await
    }

    async fn open(&self, key: &str, range: Option<(u64, u64)>) -> Result<BlobReader, BlobError> {
        let path = self.data_path(key)?;
        let mut file = tokio::fs::File::open(&path).await.map_err(io_error)?;
        let info = self.info(key, &path).await?;
        let (start, end) = resolve_range(range, info.size)?;
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await.map_err(io_error)?;
        }
        let body = read_chunks(file.take(end - start)).boxed();
        Ok(BlobReader {
            info,
            range: (start, end),
            body,
        })
    }

    async fn head(&self, key: &str) -> Result<BlobInfo, BlobError> {
        let path = self.data_path(key)?;
        self.info(key, &path).await
    }

    async fn delete(&self, key: &str) -> Result<bool, BlobError> {
        let path = self.data_path(key)?;
        let existed = match tokio::fs::remove_file(&path).await {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error(e)),
        };
        let _ = tokio::fs::remove_file(self.meta_path(key)).await;
        Ok(existed)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<BlobInfo>, BlobError> {
        // Walk only the directory the prefix names; a prefix no valid key could have
        // (`../`, `/etc`) matches nothing.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        if !dir.is_empty() && validate_key(dir).is_err() {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        // Depth-first, each directory sorted with `name/` for subdirectories, which yields
        // keys in plain byte order and lets the walk stop at `limit`.
        let mut stack = vec![(dir.to_owned(), false)];
        while let Some((rel, is_file)) = stack.pop() {
            if out.len() >= limit {
                break;
            }
            let path = if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(&rel)
            };
            if is_file {
                if rel.starts_with(prefix) {
                    let meta = tokio::fs::metadata(&path).await.map_err(io_error)?;
                    out.push(BlobInfo {
                        key: rel,
                        size: meta.len(),
                        content_type: String::new(),
                        modified_ms: modified_ms(&meta),
                    });
                }
                continue;
            }
            let mut entries = match tokio::fs::read_dir(&path).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e)),
            };
            let mut children: Vec<(String, bool)> = Vec::new();
            while let Some(entry) = entries.next_entry().await.map_err(io_error)? {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let kind = entry.file_type().await.map_err(io_error)?;
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                // Skip subtrees that cannot hold a match.
                let sort_key = if kind.is_dir() {
                    format!("{child}/")
                } else {
                    child.clone()
                };
                let reachable = sort_key.starts_with(prefix) || prefix.starts_with(&sort_key);
                if reachable && (kind.is_dir() || kind.is_file()) {
                    children.push((sort_key, kind.is_file()));
                }
            }
            children.sort();
            for (sort_key, file) in children.into_iter().rev() {
                let rel = if file {
                    sort_key
                } else {
                    sort_key.trim_end_matches('/').to_owned()
                };
                stack.push((rel, file));
            }
        }
        Ok(out)
    }

    async fn presign_get(&self, key: &str, _ttl: Duration) -> Result<Option<String>, BlobError> {
        validate_key(key)?;
        Ok(None)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        let meta = tokio::fs::metadata(&self.root).await.map_err(io_error)?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(BlobError::Unavailable("media directory is missing".into()))
        }
    }
}
