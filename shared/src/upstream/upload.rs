//! File upload for attachments: `POST {base}/http/upload-file-v2/direct`, multipart.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::frames::str_field;
use super::{UpstreamError, UpstreamErrorKind, classify};

pub(crate) const UPLOAD_PATH: &str = "/http/upload-file-v2/direct";

/// A `multipart/form-data` body with one `file` part; returns (content type, body).
pub(crate) fn multipart(file_name: &str, mime: &str, bytes: &[u8]) -> (String, Bytes) {
    let boundary = format!("----grok2api{}", uuid::Uuid::new_v4().simple());
    // Quotes and line breaks would end the header early; drop them rather than escape,
    // as browsers differ on escaping and the name is cosmetic upstream.
    let name: String = file_name
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\r' | '\n'))
        .collect();
    let name = if name.trim().is_empty() {
        "file".to_owned()
    } else {
        name
    };
    let mime_ok = !mime.is_empty()
        && mime
            .bytes()
            .all(|b| (b.is_ascii_graphic() && b != b'"') || b == b' ');
    let mime = if mime_ok {
        mime
    } else {
        "application/octet-stream"
    };
    let mut body = BytesMut::with_capacity(bytes.len() + 256);
    body.put_slice(format!("--{boundary}\r\n").as_bytes());
    body.put_slice(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n")
            .as_bytes(),
    );
    body.put_slice(format!("Content-Type: {mime}\r\n\r\n").as_bytes());
    body.put_slice(bytes);
    body.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.freeze(),
    )
}

/// The `fileMetadataId` of an upload answer, or the upload's terminal error.
pub(crate) fn file_metadata_id(answer: &Value) -> Result<String, UpstreamError> {
    if let Some(error) = answer.get("terminalError").filter(|e| match e {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }) {
        let mut error = classify::from_in_band(error);
        if error.kind == UpstreamErrorKind::Transient {
            error.kind = UpstreamErrorKind::BadRequest;
        }
        error.message = format!("upload refused: {}", error.message);
        return Err(error);
    }
    answer
        .get("fileMetadata")
        .and_then(|m| str_field(m, "fileMetadataId"))
        .or_else(|| str_field(answer, "fileMetadataId"))
        .map(str::to_owned)
        .ok_or_else(|| classify::protocol("upload answer without fileMetadataId"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multipart_has_one_file_part() {
        let (content_type, body) = multipart("a\"b\r\n.png", "image/png", b"PNGDATA");
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"file\"; filename=\"ab.png\"\r\n"));
        assert!(text.contains("Content-Type: image/png\r\n\r\nPNGDATA\r\n"));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        let (_, body) = multipart("", "bad\"mime", b"");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("filename=\"file\""));
        assert!(text.contains("Content-Type: application/octet-stream"));
    }

    #[test]
    fn answer_shapes() {
        let ok = json!({"uploadId": "u", "terminalError": null,
            "fileMetadata": {"fileMetadataId": "fm-1", "fileId": "f", "fileUri": "users/x/f/content"}});
        assert_eq!(file_metadata_id(&ok).unwrap(), "fm-1");
        assert_eq!(
            file_metadata_id(&json!({"fileMetadataId": "fm-2"})).unwrap(),
            "fm-2"
        );
        let refused = json!({"terminalError": {"code": 3, "message": "unsupported type"}});
        assert_eq!(
            file_metadata_id(&refused).unwrap_err().kind,
            UpstreamErrorKind::BadRequest
        );
        assert_eq!(
            file_metadata_id(&json!({})).unwrap_err().kind,
            UpstreamErrorKind::Protocol
        );
    }
}
