//! The media cache routes on both shapes (a local directory, and S3 on the distributed
//! shape): statistics, paged listing, download of one file or a ZIP of several (unzipped
//! and compared byte for byte), item delete and clear, with unsafe names refused.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, Cluster, Shape};

async fn post(c: &Cluster, path: &str, body: Value) -> reqwest::Response {
    c.http
        .post(c.url(path))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(c: &Cluster, path: &str) -> (u16, Value) {
    let r = c
        .http
        .get(c.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn unzip(bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    use futures::AsyncReadExt;
    let zip = async_zip::base::read::mem::ZipFileReader::new(bytes)
        .await
        .expect("a valid zip");
    let mut out = vec![];
    for i in 0..zip.file().entries().len() {
        let name = zip.file().entries()[i]
            .filename()
            .as_str()
            .unwrap()
            .to_owned();
        let mut reader = zip.reader_with_entry(i).await.unwrap();
        let mut data = vec![];
        reader.read_to_end_checked(&mut data).await.unwrap();
        let _ = reader.read_to_end(&mut vec![]).await;
        out.push((name, data));
    }
    out
}

async fn admin_cache_list_download_delete_clear(shape: Shape) {
    let c = Cluster::start(shape, "admin-cache").await;
    let blob = c.blob_store().await;
    let mut images = vec![];
    for (i, len) in [1000usize, 70_000, 200_001].into_iter().enumerate() {
        let name = format!("{}.png", uuid::Uuid::new_v4().simple());
        let data = pattern(len, i as u8);
        blob.put(&format!("images/{name}"), "image/png", data.clone())
            .await
            .unwrap();
        images.push((name, data));
    }
    let video = format!("{}.mp4", uuid::Uuid::new_v4().simple());
    blob.put(&format!("videos/{video}"), "video/mp4", pattern(4096, 9))
        .await
        .unwrap();

    let r = c.http.get(c.url("/v1/admin/cache")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, stats) = get(&c, "/v1/admin/cache").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["local_image"]["count"], 3);
    assert_eq!(stats["local_image"]["size_bytes"], 271_001);
    assert_eq!(stats["local_video"]["count"], 1);
    assert_eq!(stats["online"]["status"], "not_loaded");
    assert_eq!(stats["online_scope"], "none");
    // The online part, asked for: every account's upstream asset count, fetched now.
    c.set_tokens(&["cache-account-1", "cache-account-2"], &[])
        .await;
    let (status, stats) = get(&c, "/v1/admin/cache?scope=all").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["online_scope"], "all");
    assert_eq!(stats["online"]["status"], "ok");
    assert_eq!(stats["online_accounts"].as_array().unwrap().len(), 2);
    let details = stats["online_details"].as_array().unwrap();
    assert_eq!(details.len(), 2, "{stats}");
    assert!(details.iter().all(|d| d["status"] == "ok"), "{stats}");
    assert!(
        !stats.to_string().contains("cache-account-1"),
        "token leaked"
    );

    let (status, page1) = get(&c, "/v1/admin/cache/list?type=image&page=1&page_size=2").await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["total"], 3);
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let (_, page2) = get(&c, "/v1/admin/cache/list?type=image&page=2&page_size=2").await;
    let mut listed: Vec<Value> = page1["items"].as_array().unwrap().clone();
    listed.extend(page2["items"].as_array().unwrap().clone());
    let mut names: Vec<&str> = listed.iter().map(|i| i["name"].as_str().unwrap()).collect();
    names.sort();
    let mut expected: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    expected.sort();
    assert_eq!(names, expected);
    let first = &listed[0];
    assert_eq!(
        first["view_url"],
        format!("/v1/files/image/{}", first["name"].as_str().unwrap())
    );
    // Newest first.
    let times: Vec<i64> = listed
        .iter()
        .map(|i| i["mtime_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    for bad in ["type=gif", "type=image&page=0", "type=image&page_size=x"] {
        let (status, _) = get(&c, &format!("/v1/admin/cache/list?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
    }

    // One file: the file itself, as an attachment.
    let (name0, data0) = &images[0];
    let r = post(
        &c,
        "/v1/admin/cache/download",
        json!({"type": "image", "names": [name0]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"{name0}\"").as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), *data0);

    // Several: a ZIP of exactly the valid, existing ones.
    let (name1, data1) = &images[1];
    let (name2, data2) = &images[2];
    let r = post(
        &c,
        "/v1/admin/cache/download",
        json!({"type": "image", "names": [name1, "../../etc/passwd", name2, "missing.png", name1, format!("{}.mp4", name0)]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"image_") && disposition.ends_with(".zip\""),
        "{disposition}"
    );
    let entries = unzip(r.bytes().await.unwrap().to_vec()).await;
    assert_eq!(
        entries,
        vec![
            (name1.clone(), data1.to_vec()),
            (name2.clone(), data2.to_vec())
        ]
    );
    for names in [json!(["../x.png", "missing.png"]), json!([])] {
        let r = post(
            &c,
            "/v1/admin/cache/download",
            json!({"type": "image", "names": names}),
        )
        .await;
        assert_eq!(r.status(), 404);
    }

    // Delete one, then clear the rest.
    let r = post(
        &c,
        "/v1/admin/cache/item/delete",
        json!({"type": "image", "name": name0}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["result"]["deleted"], true);
    let r = post(
        &c,
        "/v1/admin/cache/item/delete",
        json!({"type": "image", "name": name0}),
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["result"]["deleted"], false);
    let r = post(
        &c,
        "/v1/admin/cache/item/delete",
        json!({"type": "image", "name": "../videos/x.png"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(&c, "/v1/admin/cache/clear", json!({"type": "image"})).await;
    assert_eq!(r.status(), 200);
    let cleared: Value = r.json().await.unwrap();
    assert_eq!(cleared["result"]["count"], 2);
    let (_, stats) = get(&c, "/v1/admin/cache").await;
    assert_eq!(stats["local_image"]["count"], 0);
    assert_eq!(stats["local_video"]["count"], 1);
    let r = c
        .http
        .get(c.url(&format!("/v1/files/image/{name1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .http
        .get(c.url(&format!("/v1/files/video/{video}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

both_shapes!(admin_cache_list_download_delete_clear);
