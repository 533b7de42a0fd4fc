//! Uploaded files and generated assets, per account, and `GET /users/<uid>/...`: the
//! assets host, which serves a file only to the account that owns it.
//!
//! Any simulated feature may register what it produced ([`MediaStore::add_asset`]) under any
//! `users/<uid>/...` path with any content type; downloads check the `sso` cookie against
//! the owner, as the real assets host does (asset URLs are not public).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::SimState;
use crate::account::{authenticated_token, sso_token};
use crate::faults::{self, Faults};

/// Bytes of uploads and assets kept before the oldest are forgotten.
const MAX_STORED_BYTES: usize = 256 * 1024 * 1024;

/// One file an account uploaded.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub owner: String,
    pub file_id: String,
    pub content_type: String,
    pub digest: [u8; 32],
    pub bytes: Bytes,
}

/// One file served by the assets host.
#[derive(Debug, Clone)]
pub(crate) struct Asset {
    pub owner: String,
    pub content_type: String,
    pub bytes: Bytes,
}

#[derive(Default)]
struct Inner {
    /// By `fileMetadataId`.
    uploads: HashMap<String, Upload>,
    /// By path without the leading slash (`users/<uid>/generated/<id>/image.png`).
    assets: HashMap<String, Asset>,
    /// Insertion order, for eviction: (is_upload, key).
    order: VecDeque<(bool, String)>,
    bytes: usize,
}

/// What accounts uploaded and generated, bounded in total size.
#[derive(Default)]
pub(crate) struct MediaStore {
    inner: Mutex<Inner>,
}

impl MediaStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers an upload; returns its `fileMetadataId`.
    pub(crate) fn add_upload(
        &self,
        owner: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> (String, Upload) {
        let metadata_id = uuid::Uuid::new_v4().to_string();
        let upload = Upload {
            owner: owner.to_owned(),
            file_id: uuid::Uuid::new_v4().to_string(),
            content_type: content_type.to_owned(),
            digest: Sha256::digest(&bytes).into(),
            bytes,
        };
        let mut inner = self.lock();
        inner.bytes += upload.bytes.len();
        inner.order.push_back((true, metadata_id.clone()));
        inner.uploads.insert(metadata_id.clone(), upload.clone());
        evict(&mut inner);
        (metadata_id, upload)
    }

    /// The upload with this `fileMetadataId`, if `owner` made it.
    pub(crate) fn upload_of(&self, owner: &str, metadata_id: &str) -> Option<Upload> {
        self.lock()
            .uploads
            .get(metadata_id)
            .filter(|u| u.owner == owner)
            .cloned()
    }

    /// Publishes a file on the assets host under `path` (no leading slash).
    pub(crate) fn add_asset(&self, owner: &str, path: &str, content_type: &str, bytes: Bytes) {
        let mut inner = self.lock();
        inner.bytes += bytes.len();
        inner.order.push_back((false, path.to_owned()));
        inner.assets.insert(
            path.to_owned(),
            Asset {
                owner: owner.to_owned(),
                content_type: content_type.to_owned(),
                bytes,
            },
        );
        evict(&mut inner);
    }

    pub(crate) fn asset(&self, path: &str) -> Option<Asset> {
        self.lock().assets.get(path).cloned()
    }
}

fn evict(inner: &mut Inner) {
    while inner.bytes > MAX_STORED_BYTES {
        let Some((is_upload, key)) = inner.order.pop_front() else {
            break;
        };
        let freed = if is_upload {
            inner.uploads.remove(&key).map(|u| u.bytes.len())
        } else {
            inner.assets.remove(&key).map(|a| a.bytes.len())
        };
        inner.bytes -= freed.unwrap_or(0);
    }
}

/// Makes the media store part of the simulator state.
pub(crate) fn new_store() -> Arc<MediaStore> {
    Arc::default()
}

/// `GET /users/{*rest}` on the assets host.
pub(crate) async fn download(
    State(state): State<Arc<SimState>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let faults = Faults::for_request(&headers, sso_token(&headers).as_deref());
    if faults.anti_bot {
        return faults::anti_bot_challenge();
    }
    let Some(token) = authenticated_token(&headers) else {
        return faults::unauthorized();
    };
    let path = format!("users/{rest}");
    let Some(asset) = state.media.asset(&path) else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    if asset.owner != token {
        return faults::forbidden("this asset belongs to another account");
    }
    let mut response = (StatusCode::OK, asset.bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(&asset.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The public base of the assets host as the caller reached it (`http://<host>`).
pub(crate) fn assets_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}
