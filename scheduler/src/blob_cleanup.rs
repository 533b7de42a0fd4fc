//! Trims the blob store: objects older than the age limit go, then the oldest until the
//! total is back to 80 % of the size limit (headroom, so the next few writes do not trigger
//! another round at once).

use shared::blob::{BlobError, BlobInfo, BlobStore};

/// Objects looked at per cleanup.
const LIST_LIMIT: usize = 100_000;

/// 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_age_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub removed: u64,
    pub freed_bytes: u64,
}

/// The objects to delete, oldest first.
pub fn plan(mut objects: Vec<BlobInfo>, limits: Limits, now_ms: i64) -> Vec<BlobInfo> {
    objects.sort_by(|a, b| a.modified_ms.cmp(&b.modified_ms).then(a.key.cmp(&b.key)));
    let mut total: u64 = objects.iter().map(|o| o.size).sum();
    let target = limits.max_bytes / 10 * 8;
    let mut doomed = Vec::new();
    // Once over the limit, keep deleting (oldest first) until under the target.
    let mut trimming = false;
    for object in objects {
        let too_old =
            limits.max_age_ms > 0 && now_ms - object.modified_ms >= limits.max_age_ms as i64;
        trimming =
            limits.max_bytes > 0 && (total > limits.max_bytes || (trimming && total > target));
        if too_old || trimming {
            total -= object.size;
            doomed.push(object);
        }
    }
    doomed
}

pub async fn run(store: &dyn BlobStore, limits: Limits, now_ms: i64) -> Result<Report, BlobError> {
    if limits.max_bytes == 0 && limits.max_age_ms == 0 {
        return Ok(Report::default());
    }
    let objects = store.list("", LIST_LIMIT).await?;
    let mut report = Report::default();
    for object in plan(objects, limits, now_ms) {
        if store.delete(&object.key).await? {
            report.removed += 1;
            report.freed_bytes += object.size;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64, modified_ms: i64) -> BlobInfo {
        BlobInfo {
            key: key.into(),
            size,
            content_type: "image/png".into(),
            modified_ms,
        }
    }

    #[test]
    fn trims_oldest_first_down_to_eighty_percent() {
        let objects = (0..10).map(|i| object(&format!("k{i}"), 100, i)).collect();
        let doomed = plan(
            objects,
            Limits {
                max_bytes: 900,
                max_age_ms: 0,
            },
            100,
        );
        // 1000 bytes over a 900 limit: down to 720 or less, so three go, oldest first.
        let keys: Vec<&str> = doomed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["k0", "k1", "k2"]);
    }

    #[test]
    fn under_the_limit_only_age_counts() {
        let objects = vec![object("old", 10, 0), object("new", 10, 950)];
        let doomed = plan(
            objects,
            Limits {
                max_bytes: 1000,
                max_age_ms: 500,
            },
            1000,
        );
        assert_eq!(doomed.len(), 1);
        assert_eq!(doomed[0].key, "old");
        let none = plan(
            vec![object("a", 10, 0)],
            Limits {
                max_bytes: 1000,
                max_age_ms: 0,
            },
            1000,
        );
        assert!(none.is_empty());
    }
}
