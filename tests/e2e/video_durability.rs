//! `/v1/videos` jobs outlive the processes that run them: a worker SIGKILLed mid-job (the
//! broker redelivers the job to a new worker), a `serve` killed with jobs queued and running
//! (the next start queues them again from their records), and records past their retention
//! deleted with their media by the scheduler's `job_retention` task.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::store::{VideoJobRecord, VideoJobStatus};

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Options, Shape};

async fn create(c: &Cluster, gateway: usize, body: Value) -> String {
    let r = c
        .http
        .post(c.url_at(gateway, "/v1/videos"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn video(c: &Cluster, gateway: usize, id: &str) -> Value {
    let r = c
        .http
        .get(c.url_at(gateway, &format!("/v1/videos/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Polls until the job's status is one of `wanted`; returns the video object.
async fn wait_status(c: &Cluster, gateway: usize, id: &str, wanted: &[&str]) -> Value {
    let start = Instant::now();
    loop {
        let v = video(c, gateway, id).await;
        if wanted.contains(&v["status"].as_str().unwrap_or_default()) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{id} never became {wanted:?}: {v}; logs in {}",
            c.log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn content(c: &Cluster, gateway: usize, id: &str) -> Vec<u8> {
    let r = c
        .http
        .get(c.url_at(gateway, &format!("/v1/videos/{id}/content")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

/// The record id behind a public `video_<hex>` id.
fn record_id(public: &str) -> String {
    uuid::Uuid::try_parse(public.strip_prefix("video_").unwrap())
        .unwrap()
        .to_string()
}

/// Both workers die (SIGKILL) while the job runs; a new worker gets it from RabbitMQ and
/// finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_job_survives_a_worker_kill() {
    let mut opts = Options::default();
    // Five progress frames 500 ms apart: the job runs for a few seconds.
    opts.sim.frame_delay_ms = 500;
    let mut c = Cluster::start_with(Shape::Distributed, "video-worker-kill", opts).await;
    // Two accounts: the dead worker's lease keeps one busy until it expires.
    c.set_tokens(&["video-kill-basic-1", "video-kill-basic-2"], &[])
        .await;
    let id = create(&c, 0, json!({"prompt": "a kite in the wind", "seconds": 2})).await;
    wait_status(&c, 1, &id, &["in_progress"]).await;
    c.kill("worker-0");
    c.kill("worker-1");
    let v = video(&c, 0, &id).await;
    assert_eq!(v["status"], "in_progress", "{v}");

    c.spawn_process("worker-2", &["worker"]);
    let done = wait_status(&c, 0, &id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(
        content(&c, 1, &id).await,
        sim::generated_video("a kite in the wind", 2, None)
    );
    // The new worker made the video: its own upstream metrics count the call.
    let (_, worker2) = c
        .metrics
        .iter()
        .find(|(name, _)| name == "worker-2")
        .cloned()
        .unwrap();
    let scraped = c.scrape(&worker2).await;
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("grok2api_upstream_requests_total{")
                && l.contains("operation=\"video\"")
                && l.contains("outcome=\"ok\"")),
        "the new worker ran the job:\n{scraped}"
    );
    // The record kept its id across the redelivery.
    let record = c
        .store()
        .await
        .get_video_job(&record_id(&id))
        .await
        .unwrap();
    assert_eq!(record.map(|r| r.status), Some(VideoJobStatus::Completed));
}

/// `serve` is killed with one job running and one queued (video concurrency 1); the next
/// start queues both again from their records and they complete. A record whose job was
/// not kept fails with `interrupted` instead of staying unfinished forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_requeues_unfinished_video_jobs_at_start() {
    let mut opts = Options::default();
    opts.sim.frame_delay_ms = 500;
    opts.extra_env
        .push(("GROK2API_WORKER__VIDEO_CONCURRENCY".into(), "1".into()));
    let mut c = Cluster::start_with(Shape::Embedded, "video-serve-restart", opts).await;
    c.set_tokens(&["video-requeue-basic"], &[]).await;
    let running = create(&c, 0, json!({"prompt": "first in line", "seconds": 2})).await;
    let queued = create(&c, 0, json!({"prompt": "second in line", "seconds": 1})).await;
    wait_status(&c, 0, &running, &["in_progress"]).await;
    assert_eq!(video(&c, 0, &queued).await["status"], "queued");

    // A record from before jobs were kept in it.
    let store = c.store().await;
    let now = shared::time::now_ms();
    let orphan = uuid::Uuid::new_v4();
    store
        .create_video_job(&VideoJobRecord {
            id: orphan.to_string(),
            api_key_sha256: shared::crypto::token_id(API_KEY),
            model: "grok-imagine-1.0-video".into(),
            prompt: "no job kept".into(),
            seconds: 6,
            size: "1280x720".into(),
            resolution: "480p".into(),
            status: VideoJobStatus::InProgress,
            progress: 25,
            error: None,
            video_key: None,
            thumbnail_key: None,
            video_bytes: None,
            created_at_ms: now,
            updated_at_ms: now,
            completed_at_ms: None,
            expires_at_ms: now + 600_000,
            job: None,
        })
        .await
        .unwrap();
    drop(store);

    c.restart_serve().await;
    let orphan = format!("video_{}", orphan.simple());
    let failed = video(&c, 0, &orphan).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "interrupted", "{failed}");

    for (id, prompt, seconds) in [
        (&running, "first in line", 2),
        (&queued, "second in line", 1),
    ] {
        let done = wait_status(&c, 0, id, &["completed", "failed"]).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(
            content(&c, 0, id).await,
            sim::generated_video(prompt, seconds, None)
        );
    }
}

/// `grok2api scheduler run-once job_retention` deletes records past
/// `scheduler.job_max_age_secs` (finished ones, and unfinished ones long past their
/// deadline) with their video and thumbnail, and keeps recent ones.
async fn job_retention_deletes_old_records_and_their_media(shape: Shape) {
    let c = Cluster::start(shape, "job-retention").await;
    c.set_tokens(&["retention-basic"], &[]).await;
    let recent = create(&c, 0, json!({"prompt": "keep me", "seconds": 1})).await;
    let done = wait_status(&c, 0, &recent, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");

    let store = c.store().await;
    let blob = c.blob_store().await;
    let day_ms = 86_400_000;
    let long_ago = shared::time::now_ms() - 10 * day_ms;
    let name = uuid::Uuid::new_v4().simple().to_string();
    let (video_key, thumb_key) = (format!("videos/{name}.mp4"), format!("images/{name}.png"));
    blob.put(
        &video_key,
        "video/mp4",
        sim::generated_video("old", 1, None).into(),
    )
    .await
    .unwrap();
    blob.put(
        &thumb_key,
        "image/png",
        sim::imagine_image("old thumbnail", 0).into(),
    )
    .await
    .unwrap();
    let old = |status: VideoJobStatus, keys: bool| VideoJobRecord {
        id: uuid::Uuid::new_v4().to_string(),
        api_key_sha256: shared::crypto::token_id(API_KEY),
        model: "grok-imagine-1.0-video".into(),
        prompt: "old".into(),
        seconds: 1,
        size: "1280x720".into(),
        resolution: "480p".into(),
        status,
        progress: if keys { 100 } else { 0 },
        error: None,
        video_key: keys.then(|| video_key.clone()),
        thumbnail_key: keys.then(|| thumb_key.clone()),
        video_bytes: None,
        created_at_ms: long_ago,
        updated_at_ms: long_ago,
        completed_at_ms: keys.then_some(long_ago),
        expires_at_ms: long_ago + 600_000,
        job: None,
    };
    let finished = old(VideoJobStatus::Completed, true);
    let abandoned = old(VideoJobStatus::Queued, false);
    for r in [&finished, &abandoned] {
        store.create_video_job(r).await.unwrap();
    }

    let out = c.run_command(
        &["scheduler", "run-once", "job_retention"],
        &[("GROK2API_SCHEDULER__JOB_MAX_AGE_SECS", "86400")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 video job records and 2 media objects removed"),
        "{stdout}"
    );
    for r in [&finished, &abandoned] {
        assert_eq!(store.get_video_job(&r.id).await.unwrap(), None);
    }
    for key in [&video_key, &thumb_key] {
        assert!(
            matches!(blob.head(key).await, Err(shared::blob::BlobError::NotFound)),
            "{key} is still stored"
        );
    }
    // The recent job and its video stay.
    assert_eq!(video(&c, 0, &recent).await["status"], "completed");
    assert_eq!(
        content(&c, 0, &recent).await,
        sim::generated_video("keep me", 1, None)
    );
}
both_shapes!(job_retention_deletes_old_records_and_their_media);
