use futures::future::join_all;
use serde_json::Value;

use crate::common::{
    ask, chat_request, http, next_event, open_session, parse_ndjson, sso_cookie, start, token,
    wait_for_stats, ws_connect_with,
};

#[tokio::test]
async fn parallel_calls_are_all_answered_and_counted() {
    let sim = start().await;
    let token = token("super");
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("question {i} [[words:{}]]", 50 + i))
        .collect();
    let answers = join_all(prompts.iter().map(|prompt| async {
        let response = chat_request(&sim, &token, prompt).send().await.unwrap();
        parse_ndjson(&response.text().await.unwrap())
    }))
    .await;
    for (prompt, stream) in prompts.iter().zip(answers) {
        assert_eq!(stream.text, sim::answer_for(prompt).text);
    }
    let stats = sim.stats().await;
    assert_eq!(stats.total_calls, 8);
    let entry = &stats.tokens[&token];
    assert_eq!((entry.calls, entry.in_flight), (8, 0));
    assert!((1..=8).contains(&entry.peak_concurrency));
}

#[tokio::test]
async fn concurrent_answers_raise_the_peak_across_transports() {
    let sim = start().await;
    let token = token("basic");
    // Stalled answers stay in flight, which makes the concurrency exact.
    let mut rest_streams = Vec::new();
    for _ in 0..3 {
        let mut response = chat_request(&sim, &token, "hi")
            .header("x-sim-fault", "stall")
            .send()
            .await
            .unwrap();
        assert!(response.chunk().await.unwrap().is_some());
        rest_streams.push(response);
    }
    let uid = sim::user_id_for(&token);
    let cookie = format!("{}; x-userid={uid}", sso_cookie(&token));
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let origin = Some("https://grok.com");
        let mut ws = ws_connect_with(&sim, &uid, Some(&cookie), origin, Some("stall"))
            .await
            .unwrap();
        let conversation = open_session(&mut ws, "auto").await;
        ask(&mut ws, &conversation, "hi").await;
        assert_eq!(next_event(&mut ws).await["event"]["type"], "response.chunk");
        sockets.push(ws);
    }
    let stats = sim.stats().await;
    let entry = &stats.tokens[&token];
    assert_eq!(
        (entry.calls, entry.in_flight, entry.peak_concurrency),
        (5, 5, 5)
    );
    assert_eq!(entry.last_mode.as_deref(), Some("auto"));

    drop(rest_streams);
    drop(sockets);
    wait_for_stats(&sim, |s| s.tokens[&token].in_flight == 0).await;
    assert_eq!(sim.stats().await.tokens[&token].peak_concurrency, 5);
}

#[tokio::test]
async fn stats_are_served_over_http_and_reset() {
    let sim = start().await;
    let token = token("basic");
    let response = chat_request(&sim, &token, "hi").send().await.unwrap();
    assert!(parse_ndjson(&response.text().await.unwrap()).soft_stop);

    let client = http();
    let served: Value = client
        .get(format!("{}/sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["total_calls"], 1);
    assert_eq!(served["tokens"][&token]["calls"], 1);
    assert_eq!(served["tokens"][&token]["last_mode"], "fast");
    let in_process = serde_json::to_value(sim.stats().await).unwrap();
    assert_eq!(served, in_process);

    let reset = client
        .post(format!("{}/sim/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    let stats = sim.stats().await;
    assert_eq!(stats.total_calls, 0);
    assert!(stats.tokens.is_empty());
}
