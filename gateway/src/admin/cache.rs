//! The media cache under `/v1/admin/cache`, as the original product shapes it: statistics,
//! listing, delete, clear and download, on whichever BlobStore is configured (a local
//! directory or S3).
//!
//! Names are checked like `/v1/files/*` names (`crate::files::valid_name`), so a request
//! can only ever address `images/<name>` or `videos/<name>`. Downloads of several files are
//! a stored (uncompressed) ZIP written while it is sent, through a small pipe, so memory use
//! does not grow with the files.

use std::collections::BTreeSet;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::batch::AccountOp;
use shared::blob::{BlobError, BlobInfo, BlobStore, MediaKind, content_type_for};

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::files::valid_name;
use crate::state::AppState;

/// Most objects one listing reads (beyond it the statistics undercount).
const LIST_MAX: usize = 100_000;
const MAX_PAGE_SIZE: usize = 5_000;
/// Most files one download request may name.
const MAX_DOWNLOAD_NAMES: usize = 1_000;
/// Bytes in flight between the ZIP writer and the response.
const ZIP_PIPE_BYTES: usize = 64 * 1024;

fn kind_of(value: Option<&str>) -> Result<MediaKind, ApiError> {
    match value.unwrap_or("image") {
        "image" => Ok(MediaKind::Image),
        "video" => Ok(MediaKind::Video),
        _ => Err(ApiError::invalid(
            "type",
            "invalid_type",
            "type is \"image\" or \"video\"",
        )),
    }
}

fn prefix(kind: MediaKind) -> String {
    kind.key("")
}

fn blob_error(e: BlobError) -> ApiError {
    tracing::error!(error = %e, "blob store error");
    ApiError::unavailable("The media store is unavailable, try again shortly", 2)
}

/// Every stored file of a kind with a name the server could have made, newest first.
async fn files(blob: &dyn BlobStore, kind: MediaKind) -> Result<Vec<(String, BlobInfo)>, ApiError> {
    let prefix = prefix(kind);
    let mut list: Vec<(String, BlobInfo)> = blob
        .list(&prefix, LIST_MAX)
        .await
        .map_err(blob_error)?
        .into_iter()
        .filter_map(|info| {
            let name = info.key.strip_prefix(&prefix)?.to_owned();
            valid_name(kind, &name).then_some((name, info))
        })
        .collect();
    list.sort_by(|a, b| {
        b.1.modified_ms
            .cmp(&a.1.modified_ms)
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(list)
}

fn size_mb(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0
}

fn stats(list: &[(String, BlobInfo)]) -> Value {
    let bytes: u64 = list.iter().map(|(_, i)| i.size).sum();
    json!({"count": list.len(), "size_mb": size_mb(bytes), "size_bytes": bytes})
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    token: Option<String>,
    tokens: Option<String>,
    scope: Option<String>,
}

/// `GET /v1/admin/cache[?token=|?tokens=a,b|?scope=all]`: local counts and sizes, the
/// accounts, and (when asked for) each account's online asset count, fetched now.
pub async fn stats_handler(
    State(state): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let blob = state.backends.blob.as_ref();
    let images = files(blob, MediaKind::Image).await?;
    let videos = files(blob, MediaKind::Video).await?;
    let records = state.backends.store.list_tokens().await.map_err(|e| {
        tracing::error!(error = %e, "store error");
        ApiError::unavailable("The store is unavailable, try again shortly", 2)
    })?;
    let accounts: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "token": r.id,
                "token_masked": r.token.masked(),
                "pool": r.pool,
                "status": r.status.as_str(),
                "last_asset_clear_at": Value::Null,
            })
        })
        .collect();
    let named: Vec<String> = match (&q.token, &q.tokens) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        (None, None) => vec![],
    };
    let scope = if q.scope.as_deref() == Some("all") {
        "all"
    } else if named.is_empty() {
        "none"
    } else {
        "selected"
    };
    let mut online =
        json!({"count": 0, "status": "not_loaded", "token": null, "last_asset_clear_at": null});
    let mut details = vec![];
    if scope != "none" {
        let body = if scope == "all" {
            json!({"scope": "all"})
        } else {
            json!({"tokens": named})
        };
        let ids = crate::admin::ops::accounts(&state, &body, scope == "all").await?;
        let (_, results) = crate::admin::ops::run_sync(&state, AccountOp::LoadAssets, ids).await?;
        let mut total = 0u64;
        for (id, r) in results.as_object().into_iter().flatten() {
            let count = r["count"].as_u64().unwrap_or(0);
            total += count;
            let masked = records
                .iter()
                .find(|rec| &rec.id == id)
                .map(|rec| rec.token.masked())
                .unwrap_or_default();
            let status = match r["status"].as_str() {
                Some("ok") => "ok".to_owned(),
                _ => format!("error: {}", r["error"].as_str().unwrap_or("unknown")),
            };
            details.push(json!({"token": id, "token_masked": masked, "count": count, "status": status, "last_asset_clear_at": null}));
        }
        online = json!({
            "count": total,
            "status": "ok",
            "token": if q.token.is_some() { json!(details.first().map(|d| d["token"].clone())) } else { Value::Null },
            "last_asset_clear_at": null,
        });
    }
    Ok(Json(json!({
        "local_image": stats(&images),
        "local_video": stats(&videos),
        "online": online,
        "online_accounts": accounts,
        "online_scope": scope,
        "online_details": details,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

fn number(value: Option<&str>, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    name,
                    "invalid_value",
                    format!("{name} is a whole number from 1 to {max}"),
                )
            }),
    }
}

/// `GET /v1/admin/cache/list?type=image|video&page=1&page_size=1000`, newest first.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = kind_of(q.kind.as_deref())?;
    let page = number(q.page.as_deref(), "page", 1, 1_000_000)?;
    let page_size = number(q.page_size.as_deref(), "page_size", 1000, MAX_PAGE_SIZE)?;
    let all = files(state.backends.blob.as_ref(), kind).await?;
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|(name, info)| {
            json!({
                "name": name,
                "size_bytes": info.size,
                "mtime_ms": info.modified_ms,
                "view_url": format!("/v1/files/{}/{name}", kind.segment()),
            })
        })
        .collect();
    Ok(Json(json!({
        "status": "success",
        "total": all.len(),
        "page": page,
        "page_size": page_size,
        "items": items,
    })))
}

/// `POST /v1/admin/cache/clear` `{"type"}`: deletes every file of the kind.
pub async fn clear(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let kind = kind_of(body.get("type").and_then(Value::as_str))?;
    let blob = state.backends.blob.as_ref();
    let all = files(blob, kind).await?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for (_, info) in &all {
        if blob.delete(&info.key).await.map_err(blob_error)? {
            count += 1;
            bytes += info.size;
        }
    }
    tracing::info!(kind = kind.segment(), count, "media cache cleared");
    Ok(Json(
        json!({"status": "success", "result": {"count": count, "size_mb": size_mb(bytes)}}),
    ))
}

/// `POST /v1/admin/cache/item/delete` `{"type", "name"}`.
pub async fn delete_item(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let kind = kind_of(body.get("type").and_then(Value::as_str))?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    if !valid_name(kind, name) {
        return Err(ApiError::invalid(
            "name",
            "invalid_filename",
            "Invalid filename",
        ));
    }
    let deleted = state
        .backends
        .blob
        .delete(&kind.key(name))
        .await
        .map_err(blob_error)?;
    Ok(Json(
        json!({"status": "success", "result": {"deleted": deleted}}),
    ))
}

/// `POST /v1/admin/cache/download` `{"type", "names": [...]}`: one file as an attachment,
/// several as `<type>_<YYYYmmdd_HHMMSS>.zip`. Unsafe or missing names are skipped; none
/// left is a 404.
pub async fn download(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let kind = kind_of(body.get("type").and_then(Value::as_str))?;
    let names = match body.get("names") {
        Some(Value::Array(list)) if list.len() <= MAX_DOWNLOAD_NAMES => list,
        _ => {
            return Err(ApiError::invalid(
                "names",
                "invalid_names",
                format!("names is a list of at most {MAX_DOWNLOAD_NAMES} file names"),
            ));
        }
    };
    let blob = state.backends.blob.clone();
    let mut found: Vec<(String, BlobInfo)> = vec![];
    let mut seen = BTreeSet::new();
    for name in names.iter().filter_map(Value::as_str) {
        if !valid_name(kind, name) || !seen.insert(name.to_owned()) {
            continue;
        }
        match blob.head(&kind.key(name)).await {
            Ok(info) => found.push((name.to_owned(), info)),
            Err(BlobError::NotFound) => {}
            Err(e) => return Err(blob_error(e)),
        }
    }
    match found.len() {
        0 => Err(ApiError::not_found("None of the named files exists")),
        1 => {
            let (name, info) = found.remove(0);
            let reader = blob.open(&info.key, None).await.map_err(blob_error)?;
            let mut response = Body::from_stream(reader.body).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type_for(&name)),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(reader.info.size));
            h.insert(header::CONTENT_DISPOSITION, attachment(&name));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        _ => {
            let file = format!(
                "{}_{}.zip",
                kind.segment(),
                timestamp(shared::time::now_ms())
            );
            let mut response = Body::from_stream(zip_stream(blob, found)).into_response();
            *response.status_mut() = StatusCode::OK;
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/zip"),
            );
            h.insert(header::CONTENT_DISPOSITION, attachment(&file));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
    }
}

/// Names reaching here passed `valid_name` (ASCII letters, digits, `._-`), so they are safe
/// inside the quoted header value.
fn attachment(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `YYYYmmdd_HHMMSS` (UTC) of a unix time in ms.
fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}_{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A stored ZIP of `files`, produced while it is read. The writer runs in its own task
/// behind a bounded pipe; if it fails (a file vanished or the store failed mid-way), the
/// stream ends with an error instead of a silently truncated archive.
fn zip_stream(
    blob: std::sync::Arc<dyn BlobStore>,
    files: Vec<(String, BlobInfo)>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (reader, writer) = tokio::io::duplex(ZIP_PIPE_BYTES);
    let task = tokio::spawn(write_zip(blob, files, writer));
    futures::stream::unfold((reader, Some(task)), |(mut reader, task)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        match reader.read_buf(&mut buf).await {
            Ok(0) => {
                let task = task?;
                match task.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((Err(e), (reader, None))),
                    Err(_) => Some((
                        Err(std::io::Error::other("zip writer stopped")),
                        (reader, None),
                    )),
                }
            }
            Ok(_) => Some((Ok(buf.freeze()), (reader, task))),
            Err(e) => Some((Err(e), (reader, None))),
        }
    })
}

async fn write_zip(
    blob: std::sync::Arc<dyn BlobStore>,
    files: Vec<(String, BlobInfo)>,
    writer: tokio::io::DuplexStream,
) -> std::io::Result<()> {
    use async_zip::{Compression, ZipEntryBuilder};
    use futures::AsyncWriteExt;
    let zip_error = |e: async_zip::error::ZipError| std::io::Error::other(e.to_string());
    let mut zip = async_zip::base::write::ZipFileWriter::with_tokio(writer);
    for (name, info) in files {
        let reader = blob
            .open(&info.key, None)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let entry = ZipEntryBuilder::new(name.into(), Compression::Stored);
        let mut out = zip.write_entry_stream(entry).await.map_err(zip_error)?;
        let mut body = reader.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
            out.write_all(&chunk).await?;
        }
        out.close().await.map_err(zip_error)?;
    }
    zip.close().await.map_err(zip_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "19700101_000000");
        // 2026-11-27 05:48:14 UTC
        assert_eq!(timestamp(1_795_758_494_000), "20261127_054814");
        assert_eq!(timestamp(951_782_400_000), "20000229_000000");
    }

    #[test]
    fn sizes_round_to_hundredths_of_a_mebibyte() {
        assert_eq!(size_mb(0), 0.0);
        assert_eq!(size_mb(1_572_864), 1.5);
    }
}
