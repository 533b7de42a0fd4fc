//! Turning `data:` URIs from chat messages into upstream uploads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

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
}
