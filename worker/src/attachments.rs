//! Turning chat attachments (`data:` URIs, or http(s) URLs fetched through the SSRF guard)
//! into upstream uploads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use shared::event::JobError;
use shared::fetch::SafeFetcher;

/// Largest attachment accepted, decoded.
pub const MAX_ATTACHMENT_BYTES: usize = 20 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub file_name: String,
    pub mime: String,
    pub bytes: Bytes,
}

/// Decodes `data:<mime>;base64,<payload>`.
pub fn decode_data_uri(uri: &str) -> Result<Attachment, String> {
    let rest = uri.strip_prefix("data:").ok_or("not a data URI")?;
    let (meta, payload) = rest.split_once(',').ok_or("data URI has no payload")?;
    let mime = meta
        .strip_suffix(";base64")
        .ok_or("data URI must be base64-encoded")?;
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    if payload.len() / 4 * 3 > MAX_ATTACHMENT_BYTES {
        return Err(format!(
            "attachment larger than {} MiB",
            MAX_ATTACHMENT_BYTES / 1024 / 1024
        ));
    }
    let bytes = STANDARD
        .decode(payload.trim())
        .map_err(|_| "attachment is not valid base64")?;
    let ext = mime
        .rsplit('/')
        .next()
        .unwrap_or("bin")
        .split(['+', ';'])
        .next()
        .unwrap_or("bin");
    Ok(Attachment {
        file_name: format!("file.{ext}"),
        mime: mime.to_owned(),
        bytes: Bytes::from(bytes),
    })
}

/// Loads one attachment: decodes a `data:` URI, or downloads an http(s) URL through
/// `fetcher` (public addresses only, no cookies, size-capped). Failures are the caller's
/// (400, or 503 when downloads are saturated) and name a stable code.
pub async fn load(source: &str, fetcher: &SafeFetcher) -> Result<Attachment, JobError> {
    if source.starts_with("data:") {
        return decode_data_uri(source).map_err(|m| JobError::new(400, "invalid_media", m));
    }
    let fetched = fetcher.fetch(source).await.map_err(|e| {
        tracing::info!(code = e.code(), error = %e, "media URL refused or failed");
        let mut error = JobError::new(e.status(), e.code(), e.to_string());
        if e.status() == 503 {
            error = error.with_retry_after(2);
        }
        error
    })?;
    if fetched.bytes.len() > MAX_ATTACHMENT_BYTES {
        return Err(JobError::new(
            400,
            "media_too_large",
            format!(
                "attachment larger than {} MiB",
                MAX_ATTACHMENT_BYTES / 1024 / 1024
            ),
        ));
    }
    let mime = sniff(&fetched.bytes)
        .map(str::to_owned)
        .or(fetched.content_type)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(Attachment {
        file_name: file_name_for(fetched.url.path(), &mime),
        mime,
        bytes: fetched.bytes,
    })
}

/// The type of common media from its first bytes; a server's `Content-Type` is only a hint.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        Some("video/mp4")
    } else if bytes.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

/// The URL's last path segment when it is a plain file name, else `file.<ext of mime>`.
fn file_name_for(path: &str, mime: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("");
    let plain = !last.is_empty()
        && last.len() <= 100
        && last.contains('.')
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        return last.to_owned();
    }
    let ext = mime
        .rsplit('/')
        .next()
        .unwrap_or("bin")
        .split(['+', ';'])
        .next()
        .unwrap_or("bin");
    format!("file.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_names_by_type() {
        let a = decode_data_uri("data:image/png;base64,aGk=").unwrap();
        assert_eq!(
            (a.file_name.as_str(), a.mime.as_str(), &a.bytes[..]),
            ("file.png", "image/png", &b"hi"[..])
        );
        assert!(decode_data_uri("data:image/png,hi").is_err());
        assert!(decode_data_uri("data:image/png;base64,@@@").is_err());
        assert!(decode_data_uri("http://x").is_err());
    }

    #[test]
    fn fetched_media_is_typed_by_content_and_named_safely() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF0000WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42"), Some("video/mp4"));
        assert_eq!(sniff(b"hello"), None);
        assert_eq!(file_name_for("/a/cat.png", "image/png"), "cat.png");
        assert_eq!(file_name_for("/a/", "image/jpeg"), "file.jpeg");
        assert_eq!(file_name_for("/a/x%20y.png", "image/png"), "file.png");
        assert_eq!(file_name_for("/a/noext", "image/webp"), "file.webp");
    }
}
